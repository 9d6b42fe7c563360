//! Image references: user arguments (every transport) and mirror arguments never panic, and
//! an accepted digest is always well-formed.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = imgmode_image::imgref::parse(s);
    let _ = imgmode_image::mirror::MirrorImage::parse(s);
    if let Ok(hex) = imgmode_image::digest::hex_of(s) {
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(hex.len() == 64 || hex.len() == 128);
    }
});
