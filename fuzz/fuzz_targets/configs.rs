//! The YAML/JSON readers of user and seed configuration never panic on any input:
//! MachineOSConfig, MachineConfig, ImageBasedInstallationConfig, ImageBasedConfig (the
//! configuration ISO's), the seed's manifest.json.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = imgmode_layering::machineos::MachineOSConfig::from_yaml(s, "fuzz");
    let _ = imgmode_layering::objects::MachineConfig::from_yaml(s, "fuzz");
    let _ = imgmode_ibi::config::ImageBasedInstallationConfig::parse(s, "fuzz");
    let _ = imgmode_ibi::configiso::ImageBasedConfig::parse(s, "fuzz");
    let _ = imgmode_seed::manifest::SeedClusterInfo::parse(s);
});
