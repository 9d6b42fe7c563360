//! VM scenarios. Each proves one claim end to end or fails with its console log saved; none
//! warns and continues.
//!
//! One file per scenario (the boot variants and `degraded-boot` share `boot.rs`,
//! `update-timer` shares `layered_rollback.rs`), each built
//! only from [`crate::harness`]: no scenario file uses another. Each scenario's function gets
//! the run's [`RunContext`] (the shared images, the seed made once per run) and its own
//! output directory.

pub mod boot;
pub mod disk_checks;
pub mod disk_formats;
pub mod disk_in_use;
pub mod ibi;
pub(crate) mod ibi_site;
pub mod ibi_timing;
pub mod install_iso;
pub mod layer_build;
pub mod layered_rollback;
pub mod powercut;
pub mod registry_less;
pub mod registry_less_upgrade;
pub mod seed;

use crate::harness::context::RunContext;
use anyhow::Result;
use boot::Mode;
use futures::future::BoxFuture;
use std::path::Path;

/// How a scenario runs: with the run's shared state, in its output directory; the message
/// of a pass.
pub type RunFn = for<'a> fn(&'a RunContext, &'a Path) -> BoxFuture<'a, Result<String>>;

/// A scenario that is synchronous code over the shared images, run on a blocking thread.
fn blocking<'a>(
    ctx: &'a RunContext,
    dir: &'a Path,
    f: fn(&crate::harness::artifacts::Artifacts, &Path) -> Result<String>,
) -> BoxFuture<'a, Result<String>> {
    let (a, d) = (ctx.artifacts.clone(), dir.to_path_buf());
    Box::pin(async move { tokio::task::spawn_blocking(move || f(&a, &d)).await? })
}

/// A scenario: a name, what it proves, and how.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: RunFn,
    /// Left out of the CI tier (`cargo xtask ci`), and why: which scenarios of the tier prove
    /// its area. `None`: in the tier. `cargo xtask vmtest` runs every scenario.
    pub not_in_ci: Option<&'static str>,
    /// What it shares with other scenarios of the run ([`SEED`], [`LAYERED`]): scenarios
    /// sharing something run in one lane, in the suite's order (`--lanes`, [`crate::plan_lanes`]).
    pub shares: Option<&'static str>,
    /// About how long it runs on the reference machine (2 cores, TCG), in seconds: how lanes
    /// are balanced, never a limit.
    pub est_seconds: u32,
}

/// The run's seed: the `seed` scenario makes it, `ibi` and `registry-less` install it.
pub const SEED: &str = "the seed";
/// The layered images built on the host and the payload disks made of them.
pub const LAYERED: &str = "the layered images";

/// The scenarios that boot the shared raw disk (the run writes it only for them).
pub const RAW_DISK_SCENARIOS: &[&str] = &["boot-raw"];

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish()
    }
}

/// Every scenario, in the order `cargo xtask vmtest` runs them.
pub fn all() -> Vec<Scenario> {
    let mut v = boot_scenarios();
    v.extend(node_scenarios());
    v.extend(install_scenarios());
    v.extend(disk_scenarios());
    v
}

/// The scenarios of the base disk's boots.
fn boot_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "boot",
            about:
                "the base qcow2 boots through SeaBIOS and GRUB; status reports the image's commit",
            not_in_ci: None,
            shares: None,
            est_seconds: 54,
            run: |ctx, d| Box::pin(boot::boot(ctx, d, Mode::Bios)),
        },
        Scenario {
            name: "boot-uefi",
            about: "the same disk boots through OVMF and GRUB EFI",
            not_in_ci: Some("ibi's first host boots its installation ISO and then its installed disk through OVMF and GRUB EFI"),
            shares: None,
            est_seconds: 60,
            run: |ctx, d| Box::pin(boot::boot(ctx, d, Mode::Uefi)),
        },
        Scenario {
            name: "boot-raw",
            about: "the raw disk of the same image boots through SeaBIOS and GRUB",
            not_in_ci: Some("boot boots the same image's qcow2 through SeaBIOS and GRUB; disk-checks checks a raw disk's table and filesystems, and disk-formats reads the fixed vhd (the raw disk followed by a 512-byte footer) back on the host"),
            shares: None,
            est_seconds: 55,
            run: |ctx, d| Box::pin(boot::boot(ctx, d, Mode::BiosRaw)),
        },
        Scenario {
            name: "boot-direct",
            about: "the deployment boots with -kernel/-initrd/-append taken from the disk's boot entry",
            not_in_ci: Some("boot boots the same disk's boot entry through GRUB; QEMU loading the kernel itself is the benchmarks' way to time a boot (cargo xtask bench images), not a way users boot"),
            shares: None,
            est_seconds: 54,
            run: |ctx, d| Box::pin(boot::boot(ctx, d, Mode::Direct)),
        },
        Scenario {
            name: "degraded-boot",
            about: "the harness catches a degraded system: the base disk booted with a unit that fails at boot is refused, naming the unit and its journal",
            not_in_ci: None,
            shares: None,
            est_seconds: 44,
            run: |ctx, d| Box::pin(boot::degraded_boot(ctx, d)),
        },
    ]
}

/// The scenarios of nodes: layered images, updates, power cuts, `imgmode layer build`.
fn node_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "layered-rollback",
            about: "a layered image built with imgmode build: switch from an oci-archive on a disk, rollback, MachineConfig by digest from a registry, revert; a hard reset as the revert's finalize begins, while the base deployment is written at shutdown and the boot configuration still names the layered one: the layered deployment boots again, ostree fsck is clean, and the revert done again boots the base",
            not_in_ci: None,
            shares: Some(LAYERED),
            est_seconds: 700,
            run: |ctx, d| Box::pin(layered_rollback::layered_rollback(ctx, d)),
        },
        Scenario {
            name: "update-timer",
            about: "a node following a registry tag: the base image's update timer finds the tag unchanged, then stages with no command typed the digest pushed to it after the node booted, and the next boot runs it, still following the tag",
            not_in_ci: Some("layered-rollback runs imgmode upgrade --check against a registry and stages and boots the same layered image from that registry, by tag and then by digest through a MachineConfig; the timer's service runs the same verb, imgmode upgrade --auto"),
            shares: Some(LAYERED),
            est_seconds: 330,
            run: |ctx, d| Box::pin(layered_rollback::update_timer(ctx, d)),
        },
        Scenario {
            name: "powercut",
            about: "a hard reset aimed as finalize begins, while the new deployment is written at shutdown and the boot configuration still names the old one: the old deployment boots and ostree fsck is clean",
            not_in_ci: Some("layered-rollback aims the same reset at the same moment, as finalize begins writing its revert's deployment at shutdown, and checks that the old deployment boots and ostree fsck is clean; here the upgrade cut is a switch from an oci-archive, there a revert staged from the repository"),
            shares: Some(LAYERED),
            est_seconds: 300,
            run: |ctx, d| Box::pin(powercut::powercut(ctx, d, powercut::CUTS)),
        },
        Scenario {
            name: "powercut-spread",
            about: "11 more hard resets: one aimed as fetching begins, one as staging begins, and 9 at times spread over upgrades in both directions (0.3 to 9 s into the switch, 0.5 to 1.6 s into finalize, two right after the bootloader swap, when the new deployment must boot): the old or the new deployment always boots and ostree fsck is clean",
            not_in_ci: Some("layered-rollback aims a reset where an upgrade is most fragile, as finalize writes the new deployment at shutdown, and checks that the old deployment boots and ostree fsck is clean; a reset while fetching or staging leaves only objects or a half-checked-out deployment nothing points at yet, beside the boot configuration of before, and one after the bootloader swap leaves the new boot configuration complete (ostree swaps it in one rename)"),
            shares: Some(LAYERED),
            est_seconds: 1500,
            run: |ctx, d| Box::pin(powercut::powercut(ctx, d, powercut::SPREAD_CUTS)),
        },
        Scenario {
            name: "layer-build",
            about: "imgmode layer build: MachineOSConfig + pool MachineConfigs -> pushed image and a MachineOSBuild (reuse, rebuild annotation, a failed build FAILED at once, a failed push after 3 retries, bad configs)",
            not_in_ci: None,
            shares: None,
            est_seconds: 10,
            run: |ctx, d| blocking(ctx, d, layer_build::layer_build),
        },
    ]
}

/// The scenarios of seeds and installs from ISOs.
fn install_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "seed",
            about: "just build-seed: the test cluster boots healthy, imgmode seed create in the guest, the seed's labels, file set, commit, etc.deletions and expired certificates checked on the host; seed check gates",
            not_in_ci: None,
            shares: Some(SEED),
            est_seconds: 290,
            run: |ctx, d| Box::pin(seed::seed_scenario(ctx, d)),
        },
        Scenario {
            name: "ibi",
            about: "imgmode ibi create-image: the installation ISO boots through OVMF with a blank disk on a private network without DHCP, runs from its root image under a RAM layer, refuses a seed version mismatch and a missing disk with the disk untouched, installs this run's seed from a TLS registry (trust bundle, pull secret) and reboots into it; with the cluster-config ISO (which holds no key of the admin kubeconfig signer) post-pivot renames the cluster (auth/kubeconfig works, the seed's does not, extra manifest in etcd); SSH takes the site's key and refuses the seed owner's; the site holds none of the seed system's private keys",
            not_in_ci: None,
            shares: Some(SEED),
            est_seconds: 420,
            run: |ctx, d| Box::pin(ibi::ibi(ctx, d, false)),
        },
        Scenario {
            name: "ibi-two-sites",
            about: "ibi's site, then a second one from the same seed: its installation ISO boots through SeaBIOS and installs from the seed embedded in the ISO with the registry gone; neither holds a private key of the seed system's, and the two share no private key and no SSH host key (the IBI benchmark's baseline boots the second site's disk again)",
            not_in_ci: Some("ibi installs a site from this run's seed and checks that every private key of the seed system was replaced on it (none is left), so no secret of the seed reaches a site; boot boots through SeaBIOS and GRUB (an ISO's El Torito boot through SeaBIOS is install-iso's, in the full suite); registry-less (full suite) installs from a seed the ISO carries with no registry reachable (through the payload's registry on localhost rather than the layout the embedded ISO reads)"),
            shares: Some(SEED),
            est_seconds: 800,
            run: |ctx, d| Box::pin(ibi::ibi(ctx, d, true)),
        },
        Scenario {
            name: "registry-less",
            about: "imgmode ibi create-image --payload: with no network interface at all, the live system serves the payload (this run's seed, imgmode mirror) on localhost:22625 with TLS and the pull secret's credentials, installs the seed through it, and the installed system serves its copy after the reboot; pulls without credentials are refused, a flipped blob is found by payload verify and refused by a pull; the still-attached installation ISO is imported at boot by its udev rule (held already) into the InternalReleaseImage record, and payload opt-out stops the registry and removes its files, mirrors, import rule and store",
            not_in_ci: Some("ibi boots an installation ISO with no DHCP server, runs it from its root image and installs this run's seed through the same install code from a TLS registry that takes the pull secret's credentials; on the host, cli/tests/mirror_cli.rs serves a payload with the real docker-registry and the payload registry's generated configuration (TLS from its CA, the pull secret's credentials accepted, anything else refused, read-only), finds a flipped blob with payload verify, and adds a payload from an ISO with its InternalReleaseImage record and mirrors (opt-out's removal is ibi/src/payload/optout.rs's test on a written root)"),
            shares: Some(SEED),
            est_seconds: 590,
            run: |ctx, d| Box::pin(registry_less::registry_less(ctx, d)),
        },
        Scenario {
            name: "registry-less-upgrade",
            about: "two VMs on a private link and no other network: node A installs from payload ISO v1 and serves it on its link's address (its registry's certificate issued again to name it); node B, from A's imgmode payload join-config, installs from A's registry (refused without credentials); payload ISO v2 plugged into A is imported by its udev rule, v1's removal is refused while the cluster runs its release, A switches to v2's OS through port 22625 and boots it, and v1's removal then goes through",
            not_in_ci: Some("registry-less (full suite) serves the payload from the ISO and the installed copy; on the host, ibi/src/payload/serving.rs's tests issue the registry's certificate again for new names under the same CA (the new key 0600) and build the join config, which they parse back as imageDigestSources, and cli/tests/mirror_cli.rs adds payloads with their InternalReleaseImage record and mirrors and refuses to remove one the cluster's release or a deployment uses; ibi installs from a TLS registry trusted through additionalTrustBundle with a static network on a network without DHCP; layered-rollback switches to and boots an image from a registry"),
            shares: Some(SEED),
            est_seconds: 2100,
            run: |ctx, d| Box::pin(registry_less_upgrade::registry_less_upgrade(ctx, d)),
        },
    ]
}

/// The scenarios of disks: in use, their checks, formats, the installer ISO.
fn disk_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "disk-in-use",
            about: "imgmode ibi install refuses, at preflight and with the data intact, an active LVM volume group's member (by name and by-id link), an md RAID1 member and the running root's disk (the guest's kernel has device-mapper and md); freed, the same disks pass the check",
            not_in_ci: None,
            shares: None,
            est_seconds: 80,
            run: |ctx, d| Box::pin(disk_in_use::disk_in_use(ctx, d)),
        },
        Scenario {
            name: "disk-checks",
            about: "qcow2 passes qemu-img check; raw (xfs root) passes sgdisk -v, e2fsck, fsck.vfat, xfs_repair; too-small --size is refused",
            not_in_ci: None,
            shares: None,
            est_seconds: 75,
            run: |ctx, d| blocking(ctx, d, disk_checks::disk_checks),
        },
        Scenario {
            name: "disk-formats",
            about: "imgmode disk with a bootc-image-builder config (a user with password, key and wheel; /boot and / minsize; kernel append): the streamOptimized vmdk (config.toml) and the fixed vhd (the same settings in config.json) are written 0600 and checked on the host (qemu-img check of the vmdk, the vhd's size and footer), and each setting is read back from both (debugfs: the partitions' sizes, the user's entries, password hash, home and key, the boot entries' append)",
            not_in_ci: None,
            shares: None,
            est_seconds: 70,
            run: |ctx, d| {
                use disk_formats::{VHD, VMDK};
                Box::pin(disk_formats::disk_formats(ctx, d, &[VMDK, VHD], &[]))
            },
        },
        Scenario {
            name: "disk-formats-vmdk",
            about: "the streamOptimized vmdk imgmode disk writes from a bootc-image-builder config.toml boots through OVMF from its own format: the user logs in over SSH with the key, in wheel, the password verifies, /boot and / have their minsize, the append is on the command line",
            not_in_ci: Some("disk-formats writes the same vmdk from the same config.toml, checks it on the host (streamOptimized, qemu-img check) and reads each setting back from it (a user with password, key and wheel, her home, /boot and / minsize, an append); ibi's first host boots through OVMF"),
            shares: None,
            est_seconds: 150,
            run: |ctx, d| {
                use disk_formats::VMDK;
                Box::pin(disk_formats::disk_formats(ctx, d, &[VMDK], &[VMDK]))
            },
        },
        Scenario {
            name: "disk-formats-vhd",
            about: "the fixed vhd imgmode disk writes from a bootc-image-builder config.json boots through SeaBIOS from its own format; the same user, password, minsize and append checks as disk-formats",
            not_in_ci: Some("disk-formats writes the vhd from config.json, checks it on the host (a fixed, aligned VHD: the raw disk and its footer) and reads each setting back from it; boot boots a disk imgmode's disk code wrote through SeaBIOS; config.json reads to the same settings as config.toml (a unit test)"),
            shares: None,
            est_seconds: 120,
            run: |ctx, d| {
                use disk_formats::VHD;
                Box::pin(disk_formats::disk_formats(ctx, d, &[VHD], &[VHD]))
            },
        },
        Scenario {
            name: "install-iso",
            about: "imgmode iso with a bootc-image-builder config: the unattended installer ISO boots (SeaBIOS, CD) beside two blank disks, installs the base image onto the disk the config names (the other untouched), grows its root to the disk and reboots into it; the config's user logs in over SSH with its key, in wheel, its password verifies, its home is its own; /boot has its minsize; its append is on the command line",
            not_in_ci: Some("imgmode iso writes its disk image on the host with imgmode disk's code and customisations, which disk-formats writes from the same kinds of bootc-image-builder settings and reads back on the host (a user with password, key and wheel, her home, /boot and / minsize, an append); ibi boots an installation ISO beside a blank disk, runs its live system from its root image, refuses a missing disk with the disk untouched, installs onto the disk its config names and reboots into it"),
            shares: None,
            est_seconds: 400,
            run: |ctx, d| Box::pin(install_iso::install_iso(ctx, d)),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_left_out_of_ci_names_ci_scenarios_that_cover_it() {
        let all = all();
        let in_ci: Vec<&str> = all
            .iter()
            .filter(|s| s.not_in_ci.is_none())
            .map(|s| s.name)
            .collect();
        for s in all.iter() {
            if let Some(why) = s.not_in_ci {
                assert!(
                    why.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                        .any(|w| in_ci.contains(&w)),
                    "{}: the reason it is not in the CI tier names no scenario of the tier: {why}",
                    s.name
                );
            }
        }
        for n in RAW_DISK_SCENARIOS {
            assert!(all.iter().any(|s| s.name == *n), "{n}");
        }
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<_> = all().iter().map(|s| s.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
