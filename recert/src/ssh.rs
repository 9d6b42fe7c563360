//! SSH host keys: every `ssh_host_*_key` in a directory is replaced by a new key of the same
//! algorithm (and RSA size), with its `.pub` companion, keeping file modes.

use std::path::Path;

use anyhow::{Context, Result};
use ssh_key::{Algorithm, LineEnding, PrivateKey};

/// Replace the host keys under `dir`; returns the private key paths (written or, on a dry run,
/// that would be written).
pub fn regenerate_host_keys(dir: &Path, dry_run: bool) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing SSH host keys in {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    let mut out = vec![];
    for name in names
        .iter()
        .filter(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
    {
        let path = dir.join(name);
        let old = PrivateKey::read_openssh_file(&path)
            .with_context(|| format!("reading SSH host key {}", path.display()))?;
        let mut rng = rand::thread_rng();
        let mut new = match old.algorithm() {
            Algorithm::Rsa { .. } => {
                let bits = old
                    .key_data()
                    .rsa()
                    .and_then(|k| k.public.n.as_positive_bytes())
                    .map_or(3072, |n| n.len() * 8);
                PrivateKey::from(
                    ssh_key::private::RsaKeypair::random(&mut rng, bits)
                        .with_context(|| format!("generating an RSA {bits} host key"))?,
                )
            }
            alg => PrivateKey::random(&mut rng, alg.clone())
                .with_context(|| format!("generating a {alg} host key for {}", path.display()))?,
        };
        new.set_comment(old.comment());
        if !dry_run {
            let text = new.to_openssh(LineEnding::LF)?;
            crate::filesystem::write_atomic(&path, text.as_bytes())?;
            let pub_path = dir.join(format!("{name}.pub"));
            let pub_text = format!("{}\n", new.public_key().to_openssh()?);
            crate::filesystem::write_atomic(&pub_path, pub_text.as_bytes())?;
        }
        out.push(path.display().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_replaced_with_the_same_algorithm() {
        let td = tempfile::tempdir().unwrap();
        let mut rng = rand::thread_rng();
        let old = PrivateKey::random(&mut rng, Algorithm::Ed25519).unwrap();
        let p = td.path().join("ssh_host_ed25519_key");
        old.write_openssh_file(&p, LineEnding::LF).unwrap();
        std::fs::write(td.path().join("ssh_host_ed25519_key.pub"), "old").unwrap();
        std::fs::write(td.path().join("sshd_config"), "Port 22").unwrap();
        let done = regenerate_host_keys(td.path(), false).unwrap();
        assert_eq!(done.len(), 1);
        let new = PrivateKey::read_openssh_file(&p).unwrap();
        assert_eq!(new.algorithm(), Algorithm::Ed25519);
        assert_ne!(new.public_key(), old.public_key());
        let pubtext = std::fs::read_to_string(td.path().join("ssh_host_ed25519_key.pub")).unwrap();
        assert_eq!(pubtext.trim(), new.public_key().to_openssh().unwrap());
    }
}
