//! Key generation in parallel, overlapped with scanning.
//!
//! Workers start before the scan and generate RSA 2048 keys (the kind a cluster holds most of)
//! speculatively, up to a cap. When the scan knows what it needs, [`KeyPool::finish`] hands the
//! workers the exact remaining demand per kind and waits for them. A caller with time to spare
//! before recert (post-pivot, while it waits for the configuration, the network and etcd) may
//! start the pool itself and hand it to [`crate::run_with_pool`]; a pool dropped unfinished
//! stops its workers after their current key.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::keys::{KeyKind, PrivateKey};

const SPECULATIVE: KeyKind = KeyKind::Rsa(2048);

#[derive(Default)]
struct State {
    ready: HashMap<KeyKind, Vec<PrivateKey>>,
    /// None while scanning; then the exact jobs left.
    demand: Option<VecDeque<KeyKind>>,
    speculative_left: usize,
    error: Option<String>,
}

pub struct KeyPool {
    shared: Arc<(Mutex<State>, Condvar)>,
    workers: Vec<JoinHandle<()>>,
    started: Instant,
}

/// What the pool produced and what it cost.
pub struct Generated {
    pub keys: HashMap<KeyKind, Vec<PrivateKey>>,
    /// Time spent waiting for keys after the scan ended.
    pub wait: Duration,
    /// Time from pool start to the last key.
    pub total: Duration,
    pub speculative_unused: usize,
}

impl KeyPool {
    /// Start `threads` workers that may generate up to `speculative` RSA 2048 keys before the
    /// demand is known.
    pub fn start(threads: usize, speculative: usize) -> Self {
        let shared = Arc::new((
            Mutex::new(State {
                speculative_left: speculative,
                ..Default::default()
            }),
            Condvar::new(),
        ));
        let workers = (0..threads.max(1))
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || worker(&shared))
            })
            .collect();
        KeyPool {
            shared,
            workers,
            started: Instant::now(),
        }
    }

    /// Add workers until there are `threads` (a pool started early with fewer, handed to a
    /// run that may use more).
    pub fn grow_to(&mut self, threads: usize) {
        while self.workers.len() < threads {
            let shared = self.shared.clone();
            self.workers
                .push(std::thread::spawn(move || worker(&shared)));
        }
    }

    /// How many keys are ready, of every kind.
    pub fn ready(&self) -> usize {
        let st = self.shared.0.lock().expect("key pool lock");
        st.ready.values().map(Vec::len).sum()
    }

    /// Generate what is still missing of `needs` and return exactly that many keys per kind.
    pub fn finish(mut self, needs: &HashMap<KeyKind, usize>) -> Result<Generated> {
        let waited = Instant::now();
        {
            let (lock, cv) = &*self.shared;
            let mut st = lock.lock().expect("key pool lock");
            let mut jobs = VecDeque::new();
            for (kind, &n) in needs {
                let have = st.ready.get(kind).map_or(0, |v| v.len());
                jobs.extend(std::iter::repeat_n(*kind, n.saturating_sub(have)));
            }
            st.demand = Some(jobs);
            cv.notify_all();
        }
        for w in std::mem::take(&mut self.workers) {
            w.join()
                .map_err(|_| anyhow!("a key generation thread panicked"))?;
        }
        let mut st = self.shared.0.lock().expect("key pool lock");
        if let Some(e) = st.error.take() {
            return Err(anyhow!(e));
        }
        let mut keys = HashMap::new();
        let mut unused = 0;
        for (kind, mut v) in std::mem::take(&mut st.ready) {
            let n = needs.get(&kind).copied().unwrap_or(0);
            unused += v.len().saturating_sub(n);
            v.truncate(n);
            keys.insert(kind, v);
        }
        Ok(Generated {
            keys,
            wait: waited.elapsed(),
            total: self.started.elapsed(),
            speculative_unused: unused,
        })
    }
}

impl Drop for KeyPool {
    /// Unfinished (the run failed, or resumed from its journal and needed no keys): no more
    /// keys; each worker ends after the one it is making, and what was made is dropped.
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        if let Ok(mut st) = lock.lock() {
            st.demand.get_or_insert_with(VecDeque::new).clear();
            st.speculative_left = 0;
        }
        cv.notify_all();
    }
}

fn worker(shared: &(Mutex<State>, Condvar)) {
    let (lock, cv) = shared;
    loop {
        let kind = {
            let mut st = lock.lock().expect("key pool lock");
            loop {
                if st.error.is_some() {
                    return;
                }
                if let Some(jobs) = st.demand.as_mut() {
                    match jobs.pop_front() {
                        Some(k) => break k,
                        None => return,
                    }
                }
                if st.speculative_left > 0 {
                    st.speculative_left -= 1;
                    break SPECULATIVE;
                }
                st = cv.wait(st).expect("key pool lock");
            }
        };
        let key = PrivateKey::generate(kind);
        let mut st = lock.lock().expect("key pool lock");
        match key {
            Ok(k) => st.ready.entry(kind).or_default().push(k),
            Err(e) => st.error = Some(format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_exactly_the_demand_of_each_kind() {
        let pool = KeyPool::start(2, 1);
        let needs = HashMap::from([
            (KeyKind::P256, 3),
            (KeyKind::P384, 1),
            (KeyKind::Rsa(2048), 1),
            (KeyKind::Ed25519, 1),
        ]);
        let got = pool.finish(&needs).unwrap();
        for (kind, n) in &needs {
            assert_eq!(got.keys[kind].len(), *n);
            assert!(got.keys[kind].iter().all(|k| k.kind() == *kind));
        }
        let spkis: std::collections::HashSet<_> =
            got.keys.values().flatten().map(|k| k.spki_der()).collect();
        assert_eq!(spkis.len(), 6, "every key is distinct");
    }

    #[test]
    fn an_early_pool_grows_and_its_speculative_keys_count_towards_the_demand() {
        let mut pool = KeyPool::start(1, 2);
        let t0 = Instant::now();
        while pool.ready() < 2 {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "no speculative key made"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pool.grow_to(2);
        assert_eq!(pool.workers.len(), 2);
        let got = pool
            .finish(&HashMap::from([(SPECULATIVE, 3), (KeyKind::P256, 1)]))
            .unwrap();
        assert_eq!(got.keys[&SPECULATIVE].len(), 3);
        assert_eq!(got.keys[&KeyKind::P256].len(), 1);
        assert_eq!(got.speculative_unused, 0);
    }

    #[test]
    fn a_dropped_pool_stops_its_workers() {
        let pool = KeyPool::start(2, 1_000_000);
        let shared = pool.shared.clone();
        drop(pool);
        let t0 = Instant::now();
        // both workers end after their current key: only this test holds the state then
        while Arc::strong_count(&shared) > 1 {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the workers of a dropped pool still run"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let st = shared.0.lock().unwrap();
        assert!(st.ready.values().map(Vec::len).sum::<usize>() <= 2);
    }
}
