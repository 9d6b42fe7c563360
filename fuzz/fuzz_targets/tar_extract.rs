//! The hardened extractor on arbitrary bytes: never panics, never writes outside its target
//! (a sibling directory holding a sentinel stays exactly as it was), never exceeds its budget.
#![no_main]
use imgmode_image::extract::{unpack, Budget, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"keep").unwrap();
    let target = t.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let root = cap_std::fs::Dir::open_ambient_dir(&target, cap_std::ambient_authority()).unwrap();
    let mut budget = Budget::new(1 << 20);
    for policy in [Policy::image_layer(), Policy::plain()] {
        let _ = unpack(data, &root, &policy, &mut budget);
    }
    assert!(budget.left <= budget.total);
    let names: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert_eq!(names.len(), 1, "something was written outside the target");
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep");
    let top: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert_eq!(top.len(), 2, "something was written beside the target");
});
