//! recert's PEM / kubeconfig / JWT scanner never panics, and a walk that replaces nothing
//! returns the text unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut seen = 0usize;
    if let Ok(out) = imgmode_recert::text::walk(s, "fuzz", &mut |_, _| {
        seen += 1;
        Ok(None)
    }) {
        assert_eq!(out, s, "a walk without replacements changed the text");
    }
    let _ = imgmode_recert::text::is_kubeconfig(s);
    let _ = imgmode_recert::text::kubeconfig_data_fields(s);
});
