//! Small regular files written on worker threads while the extractor reads on.
//!
//! Unpacking a seed's repository or a system layer is tens of thousands of small files: most of
//! the time goes to the kernel making each one (create, write, owner, mode, mtime), on one
//! thread, while decompression takes another. The extractor hands files smaller than
//! `write::DIRECT_MIN`, read into memory, to these workers and goes on with the next entry.
//!
//! Ordering stays the archive's wherever it matters: the extractor waits for every pending
//! file ([`WritePool::wait`]) before an entry whose name, an ancestor's or hard link target's,
//! is still being written, before anything is removed (a later entry replacing an earlier one,
//! whiteouts), and before the directories get their modes. The first worker error ends the
//! unpack; no worker writes after the unpack returns.

use super::write::{write_file, Made};
use anyhow::{anyhow, Result};
use cap_std::fs::Dir;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Files queued for the workers at most (so at most this many MiB held in memory).
const QUEUED: usize = 16;

/// The most workers a pool starts, whatever the CPU count.
const MAX_WORKERS: usize = 4;

/// One regular file to write: where, with what metadata, and its bytes.
pub(super) struct Job {
    pub(super) parent: Arc<Dir>,
    pub(super) file: String,
    pub(super) shown: String,
    pub(super) owner: Option<(u32, u32)>,
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
    pub(super) data: Vec<u8>,
}

impl Job {
    fn write(&self) -> Result<()> {
        let made = Made {
            parent: &self.parent,
            file: &self.file,
            shown: &self.shown,
            owner: self.owner,
            mode: self.mode,
            mtime: self.mtime,
            xattrs: &self.xattrs,
        };
        write_file(&made, &mut &self.data[..], None, self.data.len() as u64)?;
        Ok(())
    }
}

#[derive(Default)]
struct State {
    in_flight: usize,
    error: Option<anyhow::Error>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    idle: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) struct WritePool {
    tx: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Names handed to the workers since the last [`WritePool::wait`], as the archive gives
    /// them and as where they are made (so a name reached through a symlink is found too).
    pending: HashSet<PathBuf>,
    pending_at: HashSet<FileKey>,
}

/// Where a file is made: its directory (device and inode) and its name there.
pub(super) type FileKey = ((u64, u64), String);

impl WritePool {
    /// A pool with one worker per CPU (at most [`MAX_WORKERS`]); `None` on one CPU, where
    /// the extractor writes every file itself.
    pub(super) fn for_this_machine() -> Option<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus > 1).then(|| Self::new(cpus.min(MAX_WORKERS)))
    }

    pub(super) fn new(workers: usize) -> Self {
        let (tx, rx) = sync_channel::<Job>(QUEUED);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared::default());
        let workers = (0..workers.max(1))
            .map(|_| {
                let (rx, shared) = (rx.clone(), shared.clone());
                std::thread::spawn(move || work(&rx, &shared))
            })
            .collect();
        WritePool {
            tx: Some(tx),
            shared,
            workers,
            pending: HashSet::new(),
            pending_at: HashSet::new(),
        }
    }

    /// Queue `job` for the file `name` (blocks while the queue is full); an earlier worker's
    /// error is returned instead.
    pub(super) fn submit(&mut self, name: PathBuf, at: FileKey, job: Job) -> Result<()> {
        {
            let mut s = self.shared.lock();
            if let Some(e) = s.error.take() {
                return Err(e);
            }
            s.in_flight += 1;
        }
        self.pending.insert(name);
        self.pending_at.insert(at);
        let tx = self.tx.as_ref().expect("the pool is open until dropped");
        tx.send(job)
            .map_err(|_| anyhow!("the extractor's writing threads stopped"))
    }

    /// Whether `name`, or a directory on its way, is a file still being written.
    pub(super) fn is_pending(&self, name: &Path) -> bool {
        !self.pending.is_empty() && name.ancestors().any(|a| self.pending.contains(a))
    }

    /// Whether the file made at `at` is still being written.
    pub(super) fn is_pending_at(&self, at: &FileKey) -> bool {
        self.pending_at.contains(at)
    }

    /// Whether any file is still being written.
    pub(super) fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Wait until every queued file is written; the first worker error, if any.
    pub(super) fn wait(&mut self) -> Result<()> {
        let mut s = self.shared.lock();
        while s.in_flight > 0 {
            s = self.shared.idle.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        self.pending.clear();
        self.pending_at.clear();
        match s.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for WritePool {
    /// Workers finish the file in hand and drop the rest of the queue.
    fn drop(&mut self) {
        self.shared
            .lock()
            .error
            .get_or_insert_with(|| anyhow!("the unpack stopped"));
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>, shared: &Shared) {
    loop {
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return, // the pool was dropped
        };
        // after an error (or once the pool is dropped) the queue is drained, not written
        let skip = shared.lock().error.is_some();
        let res = if skip { Ok(()) } else { job.write() };
        let mut s = shared.lock();
        if let Err(e) = res {
            s.error.get_or_insert(e);
        }
        s.in_flight -= 1;
        if s.in_flight == 0 {
            shared.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &Arc<Dir>, file: &str, data: &[u8]) -> Job {
        Job {
            parent: dir.clone(),
            file: file.into(),
            shown: file.into(),
            owner: None,
            mode: 0o640,
            mtime: 1_000_000,
            xattrs: vec![],
            data: data.to_vec(),
        }
    }

    /// Every queued file is there, whole and with its mode and mtime, once `wait` returns;
    /// names stay pending until then, with their descendants.
    #[test]
    fn queued_files_are_written_by_the_time_wait_returns() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let dir = Arc::new(Dir::open_ambient_dir(d.path(), cap_std::ambient_authority()).unwrap());
        let mut pool = WritePool::new(3);
        for i in 0..200 {
            let name = format!("f{i}");
            let data = vec![i as u8; i * 97];
            pool.submit(
                PathBuf::from(&name),
                ((1, 2), name.clone()),
                job(&dir, &name, &data),
            )
            .unwrap();
        }
        assert!(pool.is_pending(Path::new("f7")));
        assert!(pool.is_pending(Path::new("f7/under")));
        assert!(!pool.is_pending(Path::new("g")));
        assert!(pool.is_pending_at(&((1, 2), "f7".into())));
        assert!(!pool.is_pending_at(&((1, 3), "f7".into())));
        pool.wait().unwrap();
        assert!(!pool.is_pending(Path::new("f7")) && !pool.busy());
        for i in 0..200 {
            let p = d.path().join(format!("f{i}"));
            assert_eq!(std::fs::read(&p).unwrap(), vec![i as u8; i * 97]);
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o640);
            assert_eq!(m.mtime(), 1_000_000);
        }
    }

    /// A worker's error comes back from `wait` (or the next `submit`), naming the file.
    #[test]
    fn a_workers_error_ends_the_unpack() {
        let d = tempfile::tempdir().unwrap();
        let dir = Arc::new(Dir::open_ambient_dir(d.path(), cap_std::ambient_authority()).unwrap());
        std::fs::write(d.path().join("taken"), "x").unwrap();
        let mut pool = WritePool::new(2);
        // O_EXCL: a name that exists fails (the extractor clears names before writing)
        pool.submit(
            "taken".into(),
            ((1, 2), "taken".into()),
            job(&dir, "taken", b"y"),
        )
        .unwrap();
        let e = pool.wait().unwrap_err();
        assert!(format!("{e:#}").contains("creating \"taken\""), "{e:#}");
        pool.submit("ok".into(), ((1, 2), "ok".into()), job(&dir, "ok", b"z"))
            .unwrap();
        pool.wait().unwrap();
        assert_eq!(std::fs::read(d.path().join("ok")).unwrap(), b"z");
    }
}
