//! `imgmode recert`.

use std::path::PathBuf;

/// recert's flags; each maps to the `RECERT_CONFIG` field of the same name.
#[derive(Debug, clap::Args, Default)]
pub struct RecertArgs {
    /// Scan and plan; write nothing but the summary.
    #[arg(long)]
    pub dry_run: bool,
    /// etcd client URL, e.g. http://127.0.0.1:2379.
    #[arg(long)]
    pub etcd_endpoint: Option<String>,
    /// Directory to scan recursively (repeatable).
    #[arg(long = "static-dir")]
    pub static_dirs: Vec<PathBuf>,
    /// File to scan (repeatable).
    #[arg(long = "static-file")]
    pub static_files: Vec<PathBuf>,
    /// old:new rule for exact CN/SAN values (repeatable).
    #[arg(long = "cn-san-replace")]
    pub cn_san_replace_rules: Vec<String>,
    /// "<CN> <key file>": keep that signer's key (repeatable).
    #[arg(long = "use-key")]
    pub use_key_rules: Vec<String>,
    /// PEM certificate that replaces the one with its subject (repeatable).
    #[arg(long = "use-cert")]
    pub use_cert_rules: Vec<PathBuf>,
    /// name:domain[:infraID].
    #[arg(long)]
    pub cluster_rename: Option<String>,
    /// New hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// New node IP.
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
    /// Summary without the new certificates.
    #[arg(long)]
    pub summary_file_clean: Option<PathBuf>,
    /// Make every regenerated certificate expired (for seeds).
    #[arg(long)]
    pub force_expire: bool,
    /// Re-date every regenerated certificate from now, keeping its lifetime.
    #[arg(long)]
    pub extend_expiration: bool,
    /// Directory with ssh_host_*_key files to replace.
    #[arg(long)]
    pub regenerate_server_ssh_keys: Option<PathBuf>,
    /// Key-generation threads (default: CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fail on unparseable PEM instead of skipping it.
    #[arg(long)]
    pub fail_on_invalid_pem: bool,
    /// Run although the summary file marks the tree as recerted.
    #[arg(long)]
    pub force_rerun: bool,
    /// Skip an etcd value recert cannot read (encrypted, or neither JSON nor Kubernetes
    /// protobuf) instead of failing: whatever keys it holds stay.
    #[arg(long)]
    pub skip_unreadable_values: bool,
    /// The cluster's EncryptionConfiguration: etcd values encrypted with its aescbc or aesgcm
    /// keys are read and written back encrypted with the same key.
    #[arg(long)]
    pub encryption_config: Option<PathBuf>,
    /// Where the plan is kept (0600) while it is committed (default: the summary file's path
    /// plus `.plan`); a run that finds it finishes that plan instead of planning again.
    #[arg(long)]
    pub plan_file: Option<PathBuf>,
}

impl From<RecertArgs> for imgmode_recert::RecertConfig {
    fn from(a: RecertArgs) -> Self {
        Self {
            dry_run: a.dry_run,
            etcd_endpoint: a.etcd_endpoint,
            static_dirs: a.static_dirs,
            static_files: a.static_files,
            cn_san_replace_rules: a.cn_san_replace_rules,
            use_key_rules: a.use_key_rules,
            use_cert_rules: a.use_cert_rules,
            cluster_rename: a.cluster_rename,
            hostname: a.hostname,
            ip: a.ip,
            summary_file: a.summary_file,
            summary_file_clean: a.summary_file_clean,
            force_expire: a.force_expire,
            extend_expiration: a.extend_expiration,
            regenerate_server_ssh_keys: a.regenerate_server_ssh_keys,
            threads: a.threads,
            fail_on_invalid_pem: a.fail_on_invalid_pem,
            force_rerun: a.force_rerun,
            skip_unreadable_values: a.skip_unreadable_values,
            encryption_config: a.encryption_config,
            plan_file: a.plan_file,
            interrupt_after_writes: None,
        }
    }
}
