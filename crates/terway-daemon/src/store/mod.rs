//! Crash-safe node state in a redb file: pod allocations, ENIs with their slots (cooldown and sticky
//! leases included), intents of in-flight cloud operations, and small facts (warm-up done).
//!
//! Every change is committed durably before the daemon acts on it (intents) or answers the CNI
//! (allocations). Concurrent commits are coalesced: while one transaction is being written, the next
//! requests queue up and go out together in the following transaction (group commit), so 64 pods in
//! parallel cost a handful of fsyncs, not 64. ENI records carry a version so out-of-order commits from
//! concurrent tasks never overwrite newer state with older.

mod intent;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

pub use intent::{Intent, IntentKind};

use crate::error::{DaemonError, Result};
use crate::pool::state::Eni;
use crate::record::{AllocKey, Allocation, NetAnswer, PodKey, ResourceKind};

const ENIS: TableDefinition<&str, &[u8]> = TableDefinition::new("enis");
const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
const INTENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("intents");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// One change in a commit.
#[derive(Debug, Clone)]
pub enum Change {
    /// Insert or replace an ENI (kept only if newer than the stored version).
    PutEni(Eni),
    /// Forget an ENI.
    DelEni(String),
    /// Insert or replace a pod interface's allocation.
    PutPod(Allocation),
    /// Forget a pod interface's allocation.
    DelPod(AllocKey),
    /// Forget a record written before interfaces and backends were recorded (keyed `namespace/name`).
    DelLegacyPod(PodKey),
    /// Record a backend's lease on an address (a PodCIDR cooldown), ending at unix ms.
    PutLease(String, u64),
    /// Forget a lease.
    DelLease(String),
    /// Record an intent before its cloud call.
    PutIntent(Intent),
    /// Clear a finished intent.
    DelIntent(String),
    /// Set a small fact.
    PutMeta(String, String),
}

/// Everything the store holds, loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// ENIs.
    pub enis: Vec<Eni>,
    /// Allocations.
    pub pods: Vec<Allocation>,
    /// Allocations written before interfaces and backends were recorded; their backend upgrades them.
    pub legacy_pods: Vec<LegacyAllocation>,
    /// Address leases by key, ending at unix ms.
    pub leases: Vec<(String, u64)>,
    /// Unfinished intents.
    pub intents: Vec<Intent>,
    /// Facts.
    pub meta: Vec<(String, String)>,
}

type Reply = tokio::sync::oneshot::Sender<std::result::Result<(), String>>;

/// Commits waiting for the writer, and whether a writer is running.
#[derive(Default)]
struct Queue {
    jobs: Vec<(Vec<Change>, Reply)>,
    writing: bool,
}

/// Handle to the state database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<redb::Database>,
    path: PathBuf,
    queue: Arc<std::sync::Mutex<Queue>>,
}

/// An allocation record as written before the interface, backend and answer were recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct LegacyAllocation {
    /// Owner.
    pub pod: PodKey,
    /// Sandbox.
    pub container_id: String,
    /// Pod UID.
    pub uid: String,
    /// The address.
    pub ip: std::net::Ipv4Addr,
    /// ENI (or the PodCIDR pseudo-ENI `pod-cidr`).
    pub eni_id: String,
    /// Sticky.
    pub sticky: bool,
    /// When.
    pub at_ms: u64,
}

impl LegacyAllocation {
    /// The record in today's shape (the interface was always `eth0` then).
    pub fn upgrade(&self, backend: ResourceKind, answer: NetAnswer) -> Allocation {
        Allocation {
            pod: self.pod.clone(),
            if_name: crate::record::DEFAULT_IF_NAME.into(),
            container_id: self.container_id.clone(),
            uid: self.uid.clone(),
            backend,
            ip: self.ip,
            eni_id: if answer.eni.is_some() {
                self.eni_id.clone()
            } else {
                String::new()
            },
            answer,
            qos: Default::default(),
            sticky: self.sticky,
            at_ms: self.at_ms,
        }
    }
}

impl Store {
    /// Open (or create) the database file; its directory is created 0700.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DaemonError::io(format!("create state dir {}", dir.display()), e))?;
            set_mode(dir, 0o700)?;
        }
        let db = redb::Database::create(path).map_err(|e| store_err(path, e))?;
        set_mode(path, 0o600)?;
        let store = Store {
            db: Arc::new(db),
            path: path.to_path_buf(),
            queue: Arc::default(),
        };
        // Create the tables so readers never see "table does not exist".
        store.commit_blocking(Vec::new())?;
        Ok(store)
    }

    /// Database file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Apply changes in one durable transaction (blocking; use [`Store::commit`] from async code).
    pub fn commit_blocking(&self, changes: Vec<Change>) -> Result<()> {
        apply(&self.db, &self.path, changes)
    }

    /// Apply changes durably without blocking the async runtime, coalesced with concurrent commits.
    pub async fn commit(&self, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start_writer = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.jobs.push((changes, tx));
            !std::mem::replace(&mut q.writing, true)
        };
        if start_writer {
            let (db, path, queue) = (self.db.clone(), self.path.clone(), self.queue.clone());
            tokio::task::spawn_blocking(move || write_queued(db, &path, &queue));
        }
        let lost = || DaemonError::Store {
            path: self.path.display().to_string(),
            message: "the store writer stopped before committing".into(),
        };
        let started = std::time::Instant::now();
        let res = rx.await;
        tracing::debug!(us = started.elapsed().as_micros() as u64, "store commit");
        res.map_err(|_| lost())?
            .map_err(|message| DaemonError::Store {
                path: self.path.display().to_string(),
                message,
            })
    }

    /// Read everything (at start, and in tests to compare with the cloud).
    pub fn load(&self) -> Result<Snapshot> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| store_err(p, e))?;
        let mut snap = Snapshot::default();
        let enis = txn.open_table(ENIS).map_err(|e| store_err(p, e))?;
        for row in enis.iter().map_err(|e| store_err(p, e))? {
            let (_, v) = row.map_err(|e| store_err(p, e))?;
            snap.enis.push(from_json(p, v.value())?);
        }
        let pods = txn.open_table(PODS).map_err(|e| store_err(p, e))?;
        for row in pods.iter().map_err(|e| store_err(p, e))? {
            let (_, v) = row.map_err(|e| store_err(p, e))?;
            match serde_json::from_slice::<Allocation>(v.value()) {
                Ok(a) => snap.pods.push(a),
                Err(e) => match serde_json::from_slice::<LegacyAllocation>(v.value()) {
                    Ok(l) => snap.legacy_pods.push(l),
                    Err(_) => return Err(store_err(p, format!("corrupt record: {e}"))),
                },
            }
        }
        let leases = txn.open_table(LEASES).map_err(|e| store_err(p, e))?;
        for row in leases.iter().map_err(|e| store_err(p, e))? {
            let (k, v) = row.map_err(|e| store_err(p, e))?;
            snap.leases
                .push((k.value().to_string(), from_json(p, v.value())?));
        }
        let intents = txn.open_table(INTENTS).map_err(|e| store_err(p, e))?;
        for row in intents.iter().map_err(|e| store_err(p, e))? {
            let (_, v) = row.map_err(|e| store_err(p, e))?;
            snap.intents.push(from_json(p, v.value())?);
        }
        let meta = txn.open_table(META).map_err(|e| store_err(p, e))?;
        for row in meta.iter().map_err(|e| store_err(p, e))? {
            let (k, v) = row.map_err(|e| store_err(p, e))?;
            snap.meta.push((
                k.value().to_string(),
                String::from_utf8_lossy(v.value()).into_owned(),
            ));
        }
        Ok(snap)
    }
}

/// Apply `changes` in one durable write transaction.
fn apply(db: &redb::Database, p: &Path, changes: Vec<Change>) -> Result<()> {
    let txn = db.begin_write().map_err(|e| store_err(p, e))?;
    {
        let mut enis = txn.open_table(ENIS).map_err(|e| store_err(p, e))?;
        let mut pods = txn.open_table(PODS).map_err(|e| store_err(p, e))?;
        let mut intents = txn.open_table(INTENTS).map_err(|e| store_err(p, e))?;
        let mut meta = txn.open_table(META).map_err(|e| store_err(p, e))?;
        let mut leases = txn.open_table(LEASES).map_err(|e| store_err(p, e))?;
        for ch in changes {
            match ch {
                Change::PutEni(eni) => {
                    let stored_version =
                        match enis.get(eni.id.as_str()).map_err(|e| store_err(p, e))? {
                            Some(v) => serde_json::from_slice::<Eni>(v.value())
                                .map(|e| e.version)
                                .ok(),
                            None => None,
                        };
                    if stored_version.is_none_or(|v| v <= eni.version) {
                        let bytes = to_json(p, &eni)?;
                        enis.insert(eni.id.as_str(), bytes.as_slice())
                            .map_err(|e| store_err(p, e))?;
                    }
                }
                Change::DelEni(id) => {
                    enis.remove(id.as_str()).map_err(|e| store_err(p, e))?;
                }
                Change::PutPod(a) => {
                    let bytes = to_json(p, &a)?;
                    pods.insert(a.key().store_key().as_str(), bytes.as_slice())
                        .map_err(|e| store_err(p, e))?;
                }
                Change::DelPod(k) => {
                    pods.remove(k.store_key().as_str())
                        .map_err(|e| store_err(p, e))?;
                }
                Change::DelLegacyPod(k) => {
                    pods.remove(k.to_string().as_str())
                        .map_err(|e| store_err(p, e))?;
                }
                Change::PutLease(k, until) => {
                    let bytes = to_json(p, &until)?;
                    leases
                        .insert(k.as_str(), bytes.as_slice())
                        .map_err(|e| store_err(p, e))?;
                }
                Change::DelLease(k) => {
                    leases.remove(k.as_str()).map_err(|e| store_err(p, e))?;
                }
                Change::PutIntent(i) => {
                    let bytes = to_json(p, &i)?;
                    intents
                        .insert(i.id.as_str(), bytes.as_slice())
                        .map_err(|e| store_err(p, e))?;
                }
                Change::DelIntent(id) => {
                    intents.remove(id.as_str()).map_err(|e| store_err(p, e))?;
                }
                Change::PutMeta(k, v) => {
                    meta.insert(k.as_str(), v.as_bytes())
                        .map_err(|e| store_err(p, e))?;
                }
            }
        }
    }
    txn.commit().map_err(|e| store_err(p, e))
}

/// Writer loop: commit everything queued in one transaction, repeat until the queue is empty. The
/// database handle is dropped before the last waiters are woken, so a caller that stops the daemon
/// and reopens the file right away never finds it still open.
fn write_queued(db: Arc<redb::Database>, path: &Path, queue: &std::sync::Mutex<Queue>) {
    let mut db = Some(db);
    while let Some(handle) = db.as_ref() {
        let jobs = std::mem::take(&mut queue.lock().unwrap_or_else(|p| p.into_inner()).jobs);
        let mut all = Vec::new();
        let mut replies = Vec::with_capacity(jobs.len());
        for (changes, reply) in jobs {
            all.extend(changes);
            replies.push(reply);
        }
        let res = apply(handle, path, all).map_err(|e| e.to_string());
        {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.jobs.is_empty() {
                q.writing = false;
                db = None;
            }
        }
        for r in replies {
            let _ = r.send(res.clone());
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| DaemonError::io(format!("chmod {:o} {}", mode, path.display()), e))
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Store {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn to_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| store_err(path, e))
}

fn from_json<T: serde::de::DeserializeOwned>(path: &Path, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| store_err(path, format!("corrupt record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::state::{EniPhase, IpSlot};
    use crate::record::{EniAnswer, QosAnswer};
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn eni(version: u64, slot: IpSlot) -> Eni {
        Eni {
            id: "eni-1".into(),
            mac: "00:16:3e:00:00:01".into(),
            vswitch_id: "vsw".into(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 0, 0, 253),
            primary_ip: Ipv4Addr::new(10, 0, 0, 5),
            phase: EniPhase::Ready,
            ips: BTreeMap::from([(Ipv4Addr::new(10, 0, 0, 5), slot)]),
            version,
            busy: false,
            full: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_are_coalesced_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Store::open(&path).unwrap();
        let mut tasks = Vec::new();
        for i in 0..100u8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.commit(vec![Change::PutMeta(format!("k{i}"), format!("v{i}"))])
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        drop(store);
        // Every handle is gone once the last commit returned: the file can be reopened at once.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap().meta.len(), 100);
    }

    #[test]
    fn round_trip_and_versioned_eni_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.redb");
        let store = Store::open(&path).unwrap();
        let pod = PodKey::new("ns", "p");
        let alloc = Allocation {
            pod: pod.clone(),
            if_name: "eth0".into(),
            container_id: "c1".into(),
            uid: "u".into(),
            backend: ResourceKind::SharedIp,
            ip: Ipv4Addr::new(10, 0, 0, 5),
            eni_id: "eni-1".into(),
            answer: NetAnswer {
                ip: Ipv4Addr::new(10, 0, 0, 5),
                subnet: "10.0.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 0, 0, 253),
                eni: Some(EniAnswer {
                    id: "eni-1".into(),
                    mac: "00:16:3e:00:00:01".into(),
                    gateway: Ipv4Addr::new(10, 0, 0, 253),
                    primary_ip: Ipv4Addr::new(10, 0, 0, 5),
                }),
            },
            qos: QosAnswer::default(),
            sticky: false,
            at_ms: 1,
        };
        store
            .commit_blocking(vec![
                Change::PutEni(eni(2, IpSlot::in_use(&alloc.key()))),
                Change::PutPod(alloc.clone()),
                Change::PutIntent(Intent::new(
                    IntentKind::DeleteEni {
                        eni_id: "eni-9".into(),
                    },
                    5,
                )),
                Change::PutMeta("warm_up_done".into(), "true".into()),
            ])
            .unwrap();
        // An older snapshot arriving late must not win.
        store
            .commit_blocking(vec![Change::PutEni(eni(1, IpSlot::Idle))])
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.enis.len(), 1);
        assert_eq!(snap.enis[0].version, 2);
        assert_eq!(snap.pods, vec![alloc.clone()]);
        assert_eq!(snap.intents.len(), 1);
        assert_eq!(
            snap.meta,
            vec![("warm_up_done".to_string(), "true".to_string())]
        );
        let id = snap.intents[0].id.clone();
        store
            .commit_blocking(vec![
                Change::DelIntent(id),
                Change::DelPod(alloc.key()),
                Change::DelEni("eni-1".into()),
            ])
            .unwrap();
        let snap = store.load().unwrap();
        assert!(snap.enis.is_empty() && snap.pods.is_empty() && snap.intents.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn records_written_before_interfaces_were_recorded_are_loaded_for_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Store::open(&path).unwrap();
        {
            let txn = store.db.begin_write().unwrap();
            {
                let mut pods = txn.open_table(PODS).unwrap();
                let old = r#"{"pod":{"namespace":"ns","name":"p"},"container_id":"c","uid":"","ip":"10.0.0.9","eni_id":"eni-1","sticky":false,"at_ms":3}"#;
                pods.insert("ns/p", old.as_bytes()).unwrap();
            }
            txn.commit().unwrap();
        }
        let snap = store.load().unwrap();
        assert!(snap.pods.is_empty());
        assert_eq!(snap.legacy_pods.len(), 1);
        assert_eq!(snap.legacy_pods[0].ip, Ipv4Addr::new(10, 0, 0, 9));
        store
            .commit_blocking(vec![Change::DelLegacyPod(PodKey::new("ns", "p"))])
            .unwrap();
        assert!(store.load().unwrap().legacy_pods.is_empty());
    }
}
