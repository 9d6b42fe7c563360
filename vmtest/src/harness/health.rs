//! The health unit every VM gets: once a boot's startup is over it writes
//! `systemctl is-system-running`, each failed unit and its journal tail to the port
//! [`HEALTH_PORT`] (captured to `health.log`), and only then starts the scenario's jobs
//! (wanted by [`JOBS_TARGET`]). [`parse_health`] reads the reports back and
//! [`HealthReport::judge`] decides whether a boot counts.

use anyhow::{ensure, Result};

/// Name of the virtio-serial port the health unit writes each boot's system state to.
pub const HEALTH_PORT: &str = "org.imgmode.health";
/// The target the health unit starts once it has reported; scenario jobs are wanted by it.
pub const JOBS_TARGET: &str = "imgmode-vmtest-jobs.target";
/// How long the health unit waits for startup to finish before it reports what it sees.
const HEALTH_WAIT_SECS: u32 = 1500;

/// The guest's shell command listing the failed units, one name a line (the health report, and
/// the live system's checks, which run before its startup ends).
pub const FAILED_UNITS_SH: &str =
    "systemctl list-units --failed --all --no-legend --plain | cut -d' ' -f1";

/// The health unit (`Type=simple`, so that it does not hold startup up itself).
fn health_unit() -> String {
    format!(
        r#"[Unit]
Description=imgmode vmtest: the system's state once startup is over
Requires=dev-virtio\x2dports-org.imgmode.health.device
After=dev-virtio\x2dports-org.imgmode.health.device

[Service]
Type=simple
ImportCredential=vmtest.health
StandardOutput=file:/dev/virtio-ports/{HEALTH_PORT}
StandardError=journal
ExecStart=/bin/sh -c 'exec sh "$CREDENTIALS_DIRECTORY/vmtest.health"'
"#
    )
}

/// The health unit's script: `IMGMODE-HEALTH <boot-id> <state>`, then `FAILED-UNIT <unit>`
/// with the unit's journal tail for each failed unit, `IMGMODE-HEALTH-END <boot-id>`; then the
/// scenario's jobs start.
pub(crate) fn health_script() -> String {
    format!(
        r#"set -u
boot=$(cat /proc/sys/kernel/random/boot_id)
state=$(timeout {HEALTH_WAIT_SECS} systemctl is-system-running --wait 2>/dev/null)
[ -n "$state" ] || state=unknown
echo "IMGMODE-HEALTH $boot $state"
for u in $({FAILED_UNITS_SH}); do
  echo "FAILED-UNIT $u"
  journalctl -b --no-pager -n 30 -u "$u" 2>&1 | sed 's/^/    /'
done
echo "IMGMODE-HEALTH-END $boot"
systemctl start --no-block {JOBS_TARGET}
"#
    )
}

/// One boot's health report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub boot_id: String,
    /// `systemctl is-system-running` once startup was over (`running`, `degraded`, ...).
    pub state: String,
    pub failed_units: Vec<String>,
    /// The report as the guest wrote it (failed units with their journal tails).
    pub text: String,
}

/// Every report in a `health.log`, in boot order (a report cut short by a reset is kept with
/// what it has).
pub fn parse_health(log: &str) -> Vec<HealthReport> {
    let mut out: Vec<HealthReport> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("IMGMODE-HEALTH ") {
            let mut w = rest.split_whitespace();
            out.push(HealthReport {
                boot_id: w.next().unwrap_or_default().to_string(),
                state: w.next().unwrap_or_default().to_string(),
                failed_units: Vec::new(),
                text: String::new(),
            });
        } else if let Some(r) = out.last_mut() {
            if line.starts_with("IMGMODE-HEALTH-END") {
                continue;
            }
            if let Some(u) = line.strip_prefix("FAILED-UNIT ") {
                r.failed_units.push(u.trim().to_string());
            }
            r.text.push_str(line);
            r.text.push('\n');
        }
    }
    out
}

impl HealthReport {
    /// `Ok` when the boot reached `running` (or, where `unfinished` says why startup may end in
    /// a reboot, `stopping` with no failed unit); otherwise the failed units and journal tails.
    pub fn judge(&self, unfinished: Option<&str>) -> Result<()> {
        let ok = self.state == "running"
            || (self.state == "stopping" && unfinished.is_some() && self.failed_units.is_empty());
        ensure!(
            ok,
            "boot {} ended startup {:?}, not \"running\" (systemctl is-system-running); failed units: {}\n{}",
            self.boot_id,
            self.state,
            if self.failed_units.is_empty() {
                "none".to_string()
            } else {
                self.failed_units.join(", ")
            },
            self.text
        );
        Ok(())
    }
}

/// The systemd credentials (name, value) that install the health unit, its script and the
/// jobs target in every VM (see [`crate::harness::qemu::qemu_args`]).
pub(crate) fn credentials() -> [(String, String); 4] {
    [
        (
            "systemd.extra-unit.imgmode-vmtest-health.service".to_string(),
            health_unit(),
        ),
        (
            format!("systemd.extra-unit.{JOBS_TARGET}"),
            "[Unit]\nDescription=imgmode vmtest: the scenario's jobs, after the health report\n"
                .to_string(),
        ),
        (
            "systemd.unit-dropin.multi-user.target~imgmode-vmtest-health".to_string(),
            "[Unit]\nWants=imgmode-vmtest-health.service\n".to_string(),
        ),
        ("vmtest.health".to_string(), health_script()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reports_are_parsed_and_judged() {
        let log = "IMGMODE-HEALTH b1 running\nIMGMODE-HEALTH-END b1\nIMGMODE-HEALTH b2 degraded\nFAILED-UNIT broken.service\n    Nov 29 broken.service: exit 1\nIMGMODE-HEALTH-END b2\nIMGMODE-HEALTH b3 stopping\n";
        let r = parse_health(log);
        assert_eq!(r.len(), 3);
        assert!(r[0].judge(None).is_ok());
        let e = r[1].judge(Some("reboots")).unwrap_err().to_string();
        assert!(e.contains("\"degraded\""), "{e}");
        assert!(e.contains("failed units: broken.service"), "{e}");
        assert!(e.contains("broken.service: exit 1"), "{e}");
        assert!(
            r[2].judge(None).is_err(),
            "stopping is a pass only where declared"
        );
        assert!(r[2].judge(Some("the installer reboots")).is_ok());
    }
}
