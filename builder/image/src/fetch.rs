//! One layer of an image streamed from wherever the image is, never staged on a disk: an OCI
//! layout is read in place, any other reference (a registry, containers-storage) through
//! skopeo's image proxy (`skopeo experimental-image-proxy`, the one ostree-ext imports with),
//! under the same credentials, CA directory, TLS setting and trust policy as every other
//! skopeo imgmode runs.
//!
//! The blob's digest and size are verified as it streams: by [`crate::digest::VerifyingReader`]
//! for a layout, by the proxy for the rest (its `GetBlob` fails the transfer when they do not
//! match). A consumer that stops before the blob's end (a tar reader stops at the archive's
//! end, before the compressed stream's trailer) calls [`LayerStream::finish`], which reads the
//! rest and returns the verdict; a stream dropped unfinished stops the transfer.

use crate::skopeo::RegistryAuth;
use crate::Store;
use anyhow::{anyhow, Context, Result};
use ostree_ext::containers_image_proxy::{ImageProxy, ImageProxyConfig};
use std::io::Read;
use std::sync::{Arc, Mutex};

/// skopeo's image proxy under `auth`, with the trust policy of [`crate::skopeo::skopeo`]:
/// where the machine has a policy, the crate's own command is kept (it ties the proxy's life
/// to this process); only without one is it replaced, to add `--insecure-policy`.
pub fn proxy_config(auth: &RegistryAuth) -> ImageProxyConfig {
    ImageProxyConfig {
        authfile: auth.authfile.clone(),
        certificate_directory: auth.cert_dir.clone(),
        insecure_skip_tls_verification: auth.tls_verify.map(|v| !v),
        skopeo_cmd: imgmode_support::host::containers_policy()
            .is_none()
            .then(|| crate::skopeo::skopeo().into_command().0),
        ..Default::default()
    }
}

/// The raw (compressed) blob, shared by the decompressing reader and [`LayerStream::finish`].
type Raw = Arc<Mutex<Box<dyn Read + Send>>>;

struct SharedRaw(Raw);

impl Read for SharedRaw {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("a reader of the layer panicked"))?
            .read(buf)
    }
}

/// A layer being streamed; see the module's documentation.
pub struct LayerStream {
    what: String,
    reader: Option<Box<dyn Read + Send>>,
    raw: Option<Raw>,
    fetcher: Option<std::thread::JoinHandle<Result<()>>>,
}

/// The chunks the proxy's pipe is read in, and how many may wait for the consumer.
const CHUNK: usize = 256 << 10;
const QUEUED: usize = 8;

impl LayerStream {
    /// Layer `index` of the image `arg` (a local name or a transport reference).
    pub fn open(store: &Store, arg: &str, auth: &RegistryAuth, index: usize) -> Result<Self> {
        let r = store.resolve(arg)?;
        if let Some(image) = crate::oci::open_layout(arg, &r.imgref)? {
            let (raw, media_type) = image.open_raw_layer(index)?;
            return Self::new(format!("layer {index} of {arg}"), &media_type, raw, None);
        }
        Self::through_proxy(arg, r.imgref.to_string(), proxy_config(auth), index)
    }

    /// `raw`, the blob, read decompressed as `media_type` says.
    fn new(
        what: String,
        media_type: &str,
        raw: Box<dyn Read + Send>,
        fetcher: Option<std::thread::JoinHandle<Result<()>>>,
    ) -> Result<Self> {
        let raw: Raw = Arc::new(Mutex::new(raw));
        Ok(Self {
            what,
            reader: Some(crate::store::decompressing(
                media_type,
                std::io::BufReader::with_capacity(1 << 20, SharedRaw(raw.clone())),
            )?),
            raw: Some(raw),
            fetcher,
        })
    }

    fn through_proxy(
        arg: &str,
        reference: String,
        config: ImageProxyConfig,
        index: usize,
    ) -> Result<Self> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(QUEUED);
        let (media_tx, media_rx) = std::sync::mpsc::channel::<String>();
        let fetcher = std::thread::spawn(move || -> Result<()> {
            imgmode_support::runtime::block_on(async move {
                let proxy = ImageProxy::new_with_config(config)
                    .await
                    .context("starting skopeo's image proxy")?;
                let img = proxy.open_image(&reference).await?;
                let (_, manifest) = proxy.fetch_manifest(&img).await?;
                let l = manifest.layers().get(index).cloned().ok_or_else(|| {
                    anyhow!(
                        "the image has {} layer(s), no layer {index}",
                        manifest.layers().len()
                    )
                })?;
                let _ = media_tx.send(l.media_type().to_string());
                let (mut blob, driver) = proxy.get_blob(&img, l.digest(), l.size()).await?;
                let copy = async move {
                    use tokio::io::AsyncReadExt;
                    loop {
                        let mut buf = vec![0u8; CHUNK];
                        let n = match blob.read(&mut buf).await {
                            Ok(n) => n,
                            Err(e) => {
                                let _ = tx.send(Err(std::io::Error::new(e.kind(), e))).await;
                                return;
                            }
                        };
                        if n == 0 {
                            return;
                        }
                        buf.truncate(n);
                        if tx.send(Ok(buf)).await.is_err() {
                            // the consumer went away: closing the pipe ends the transfer
                            return;
                        }
                    }
                };
                let ((), verdict) = tokio::join!(copy, driver);
                verdict
                    .context("skopeo's transfer of the layer (its digest and size are checked)")?;
                proxy.close_image(&img).await?;
                proxy.finalize().await?;
                anyhow::Ok(())
            })?
        });
        let media_type = match media_rx.recv() {
            Ok(m) => m,
            Err(_) => {
                let e = match fetcher.join() {
                    Ok(Err(e)) => e,
                    _ => anyhow!("the fetching thread ended without a word"),
                };
                return Err(e.context(format!("fetching {arg}")));
            }
        };
        Self::new(
            format!("layer {index} of {arg}"),
            &media_type,
            Box::new(imgmode_support::io::ChunkReader::new(rx)),
            Some(fetcher),
        )
    }

    /// The layer's uncompressed tar stream (once).
    pub fn reader(&mut self) -> Result<Box<dyn Read + Send>> {
        self.reader
            .take()
            .with_context(|| format!("internal error: {} was read twice", self.what))
    }

    /// Read what the consumer left of the blob and return the source's verdict on it (digest,
    /// size, the transfer): only after this is the content known to be the layer's.
    pub fn finish(mut self) -> Result<()> {
        self.reader = None;
        if let Some(raw) = self.raw.take() {
            std::io::copy(&mut SharedRaw(raw), &mut std::io::sink())
                .with_context(|| format!("reading the end of {}", self.what))?;
        }
        match self.fetcher.take().map(|f| f.join()) {
            None => Ok(()),
            Some(Ok(r)) => r.with_context(|| format!("fetching {}", self.what)),
            Some(Err(_)) => Err(anyhow!("the thread fetching {} panicked", self.what)),
        }
    }
}

impl Drop for LayerStream {
    /// Unfinished: the transfer stops (the proxy's pipe is closed once every reader of the
    /// layer is gone) and its thread is waited for.
    fn drop(&mut self) {
        self.reader = None;
        self.raw = None;
        if let Some(f) = self.fetcher.take() {
            let _ = f.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An OCI layout at `dir` whose one layer is `tar` gzipped; its layer's blob path.
    fn layout(dir: &std::path::Path, tar: &[u8]) -> std::path::PathBuf {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).unwrap();
        let gz = gz.finish().unwrap();
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let put = |b: &[u8]| crate::oci::put_blob(dir, b).unwrap();
        let layer = put(&gz);
        let diff = crate::digest::sha256(tar);
        let config = put(serde_json::json!({"architecture":"amd64","os":"linux",
                "rootfs":{"type":"layers","diff_ids":[diff]}})
        .to_string()
        .as_bytes());
        let csize = std::fs::metadata(crate::store::blob_path(dir, &config).unwrap())
            .unwrap()
            .len();
        let manifest = serde_json::json!({"schemaVersion":2,
            "mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":config,"size":csize},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":layer,"size":gz.len()}]})
        .to_string();
        let m = put(manifest.as_bytes());
        std::fs::write(
            dir.join("index.json"),
            serde_json::json!({"schemaVersion":2,"manifests":[{
                "mediaType":"application/vnd.oci.image.manifest.v1+json","digest":m,"size":manifest.len()}]})
            .to_string(),
        )
        .unwrap();
        crate::store::blob_path(dir, &layer).unwrap()
    }

    fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_layout_layer_streams_and_a_corrupt_tail_fails_at_finish() {
        let td = tempfile::tempdir().unwrap();
        let store = Store::new(td.path().join("store"));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let tar = tar_of("f", &data);
        let blob = layout(&td.path().join("l"), &tar);
        let arg = format!("oci:{}", td.path().join("l").display());

        // the tar reader stops at the archive's end; finish reads the rest and passes
        let mut s = LayerStream::open(&store, &arg, &RegistryAuth::default(), 0).unwrap();
        assert_eq!(first_entry(&mut s), data);
        assert!(s.reader().is_err(), "the stream is given once");
        s.finish().unwrap();

        // a blob whose last bytes changed after the tar's end: the content read is intact,
        // finish says the blob is not the layer
        let mut b = std::fs::read(&blob).unwrap();
        let n = b.len();
        b[n - 1] ^= 0xff;
        std::fs::write(&blob, &b).unwrap();
        let mut s = LayerStream::open(&store, &arg, &RegistryAuth::default(), 0).unwrap();
        assert_eq!(first_entry(&mut s), data);
        let err = format!("{:#}", s.finish().unwrap_err());
        assert!(err.contains("corrupted or truncated"), "{err}");

        // no layer 1
        assert!(LayerStream::open(&store, &arg, &RegistryAuth::default(), 1).is_err());
    }

    /// The first entry's content of the stream's tar.
    fn first_entry(s: &mut LayerStream) -> Vec<u8> {
        let mut a = tar::Archive::new(s.reader().unwrap());
        let mut got = vec![];
        a.entries()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        got
    }

    /// Anything but a layout goes through skopeo's image proxy: here an `oci-archive:`, whose
    /// blob skopeo checks against the manifest's digest.
    #[test]
    fn an_archive_streams_through_skopeo_and_a_corrupt_blob_fails_at_finish() {
        imgmode_testkit::require!(imgmode_testkit::Need::Tool("skopeo"));
        let td = tempfile::tempdir().unwrap();
        let store = Store::new(td.path().join("store"));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let dir = td.path().join("l");
        let blob = layout(&dir, &tar_of("f", &data));
        let archive = |name: &str| -> String {
            let path = td.path().join(name);
            let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
            b.append_dir_all(".", &dir).unwrap();
            b.finish().unwrap();
            format!("oci-archive:{}", path.display())
        };
        let good = archive("good.tar");
        let mut s = LayerStream::open(&store, &good, &RegistryAuth::default(), 0).unwrap();
        assert!(s.fetcher.is_some(), "an archive goes through the proxy");
        assert_eq!(first_entry(&mut s), data);
        s.finish().unwrap();

        let mut b = std::fs::read(&blob).unwrap();
        let n = b.len();
        b[n - 1] ^= 0xff;
        std::fs::write(&blob, &b).unwrap();
        let bad = archive("bad.tar");
        let mut s = LayerStream::open(&store, &bad, &RegistryAuth::default(), 0).unwrap();
        assert_eq!(first_entry(&mut s), data);
        let err = format!("{:#}", s.finish().unwrap_err());
        assert!(err.contains("layer 0 of oci-archive:"), "{err}");
        assert!(err.contains("digest"), "{err}");

        // dropped unread: the transfer stops and nothing hangs
        let s = LayerStream::open(&store, &good, &RegistryAuth::default(), 0).unwrap();
        drop(s);
        // a layer the image does not have
        let err = LayerStream::open(&store, &good, &RegistryAuth::default(), 3)
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("no layer 3"), "{err:#}");
    }

    #[test]
    fn the_proxy_is_configured_from_the_registry_auth() {
        let c = proxy_config(&RegistryAuth {
            authfile: Some("/run/a.json".into()),
            cert_dir: Some("/run/certs".into()),
            tls_verify: Some(false),
        });
        assert_eq!(
            c.authfile.as_deref(),
            Some(std::path::Path::new("/run/a.json"))
        );
        assert_eq!(
            c.certificate_directory.as_deref(),
            Some(std::path::Path::new("/run/certs"))
        );
        assert_eq!(c.insecure_skip_tls_verification, Some(true));
        let c = proxy_config(&RegistryAuth::default());
        assert_eq!(c.insecure_skip_tls_verification, None);
        assert!(c.authfile.is_none());
    }
}
