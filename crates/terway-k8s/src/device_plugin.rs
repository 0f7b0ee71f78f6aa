//! Device plugins that make ENIs a schedulable resource: `aliyun/eni` on exclusive-ENI nodes (one per
//! secondary ENI the instance can attach) and `aliyun/member-eni` on trunking nodes (the member ENIs
//! a trunk can carry). The kubelet adds them to the node's allocatable, so the scheduler keeps a pod
//! that asks for one off a node that has none left: Pending with the scheduler's reason, instead of a
//! CNI failure after binding.
//!
//! Each resource serves the kubelet's DevicePlugin API on its own socket in the kubelet's
//! device-plugin directory and registers there. A restarting kubelet deletes every socket in that
//! directory, so the socket is watched and the plugin serves and registers again when it goes.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

/// The generated device-plugin API (v1beta1).
#[allow(missing_docs, clippy::all)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

use v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use v1beta1::registration_client::RegistrationClient;

/// The kubelet's device-plugin directory unless told otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/kubelet/device-plugins";
/// Version of the API the kubelet is asked to speak.
const API_VERSION: &str = "v1beta1";
/// How often the socket's presence (and so the kubelet's restarts) is checked.
const WATCH_PERIOD: Duration = Duration::from_secs(2);

/// One resource to advertise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    /// Extended resource name, e.g. `aliyun/eni`.
    pub name: String,
    /// Socket file suffix, e.g. `eni` (socket `<unix time>-eni.sock`, as Terway names it).
    pub socket_suffix: String,
    /// How many devices.
    pub count: u32,
}

/// What a node advertises, from its mode and instance quotas: `aliyun/eni` = EniQuantity − 1 on
/// exclusive-ENI nodes; `aliyun/member-eni` = EniTotalQuantity − EniQuantity when trunking is on.
pub fn resources(
    exclusive: bool,
    trunking: bool,
    eni_quantity: u32,
    eni_total_quantity: u32,
) -> Vec<ResourceSpec> {
    let mut out = Vec::new();
    if exclusive && eni_quantity > 1 {
        out.push(ResourceSpec {
            name: "aliyun/eni".into(),
            socket_suffix: "eni".into(),
            count: eni_quantity - 1,
        });
    }
    let members = eni_total_quantity.saturating_sub(eni_quantity);
    if trunking && members > 0 {
        out.push(ResourceSpec {
            name: "aliyun/member-eni".into(),
            socket_suffix: "member-eni".into(),
            count: members,
        });
    }
    out
}

/// Device IDs of a resource: `<suffix>-0` … `<suffix>-(count-1)`.
fn device_ids(spec: &ResourceSpec) -> Vec<v1beta1::Device> {
    (0..spec.count)
        .map(|i| v1beta1::Device {
            id: format!("{}-{i}", spec.socket_suffix),
            health: "Healthy".into(),
            topology: None,
        })
        .collect()
}

struct Plugin {
    devices: Vec<v1beta1::Device>,
    stop: watch::Receiver<bool>,
}

type DeviceStream =
    Pin<Box<dyn Stream<Item = Result<v1beta1::ListAndWatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<v1beta1::Empty>,
    ) -> Result<Response<v1beta1::DevicePluginOptions>, Status> {
        Ok(Response::new(v1beta1::DevicePluginOptions::default()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(
        &self,
        _: Request<v1beta1::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let first = v1beta1::ListAndWatchResponse {
            devices: self.devices.clone(),
        };
        let mut stop = self.stop.clone();
        // The list never changes while this plugin serves; the stream stays open (the kubelet treats
        // its end as the plugin going away) until the plugin stops.
        let s = futures::stream::once(async move { Ok(first) }).chain(futures::stream::once(
            async move {
                let _ = stop.wait_for(|v| *v).await;
                Err(Status::unavailable("device plugin stopping"))
            },
        ));
        Ok(Response::new(Box::pin(s)))
    }

    async fn get_preferred_allocation(
        &self,
        _: Request<v1beta1::PreferredAllocationRequest>,
    ) -> Result<Response<v1beta1::PreferredAllocationResponse>, Status> {
        Ok(Response::new(
            v1beta1::PreferredAllocationResponse::default(),
        ))
    }

    async fn allocate(
        &self,
        req: Request<v1beta1::AllocateRequest>,
    ) -> Result<Response<v1beta1::AllocateResponse>, Status> {
        // Nothing to mount or expose: the device is an accounting slot; terwayd attaches the ENI
        // when the CNI asks for the pod's network.
        let n = req.into_inner().container_requests.len();
        Ok(Response::new(v1beta1::AllocateResponse {
            container_responses: vec![v1beta1::ContainerAllocateResponse::default(); n],
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<v1beta1::PreStartContainerRequest>,
    ) -> Result<Response<v1beta1::PreStartContainerResponse>, Status> {
        Ok(Response::new(v1beta1::PreStartContainerResponse {}))
    }
}

/// One kubelet connection as the gRPC server sees it: the server end of the shim's pipe.
struct Piped(tokio::io::DuplexStream);

impl tonic::transport::server::Connected for Piped {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for Piped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Piped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Serve and register every resource of `specs` in `dir` until `stop` turns true.
pub fn start(
    dir: PathBuf,
    specs: Vec<ResourceSpec>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    specs
        .into_iter()
        .map(|spec| tokio::spawn(supervise(dir.clone(), spec, stop.clone())))
        .collect()
}

/// Sockets of an earlier run of this resource (`*-<suffix>.sock`), which the kubelet would dial in vain.
fn stale_sockets(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let tail = format!("-{suffix}.sock");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_suffix(&tail)
                    .is_some_and(|ts| !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .collect()
}

async fn supervise(dir: PathBuf, spec: ResourceSpec, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    let mut waiting_logged = false;
    while !*stop.borrow() {
        let kubelet = dir.join("kubelet.sock");
        if !kubelet.exists() {
            // terwayd usually starts before the kubelet: wait for it quietly, without backing off.
            if !waiting_logged {
                tracing::info!(resource = %spec.name, socket = %kubelet.display(), "waiting for the kubelet's registration socket");
                waiting_logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_PERIOD) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        match serve_once(&dir, &spec, &mut stop).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(resource = %spec.name, error = %e, "device plugin not registered; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Serve on a fresh socket, register, and return when the socket is gone (kubelet restarted) or on stop.
async fn serve_once(
    dir: &Path,
    spec: &ResourceSpec,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let kubelet = dir.join("kubelet.sock");
    for old in stale_sockets(dir, &spec.socket_suffix) {
        let _ = std::fs::remove_file(&old);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let file = format!("{stamp}-{}.sock", spec.socket_suffix);
    let path = dir.join(&file);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("bind {}: {e}", path.display()))?;
    let (halt, halted) = watch::channel(false);
    // Every kubelet connection goes through the authority shim into an in-memory pipe the gRPC
    // server reads (see authority_shim for why).
    let (conns, incoming) = tokio::sync::mpsc::channel::<std::io::Result<Piped>>(8);
    let mut accept_stop = halted.clone();
    let acceptor = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = accept_stop.wait_for(|v| *v) => break,
            };
            match accepted {
                Ok((kubelet, _)) => {
                    let (ours, theirs) = tokio::io::duplex(64 * 1024);
                    tokio::spawn(crate::authority_shim::relay(kubelet, ours));
                    if conns.send(Ok(Piped(theirs))).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "device plugin: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let plugin = Plugin {
        devices: device_ids(spec),
        stop: halted.clone(),
    };
    let mut until = halted.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(plugin))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(incoming),
                async move {
                    let _ = until.wait_for(|v| *v).await;
                },
            ),
    );
    let registered = register(&kubelet, &file, &spec.name).await;
    if registered.is_ok() {
        tracing::info!(resource = %spec.name, count = spec.count, socket = %path.display(), "device plugin registered with the kubelet");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_PERIOD) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            if !path.exists() {
                tracing::info!(resource = %spec.name, "the kubelet removed the device-plugin socket (restart); registering again");
                break;
            }
        }
    }
    let _ = halt.send(true);
    let _ = server.await;
    let _ = acceptor.await;
    let _ = std::fs::remove_file(&path);
    registered
}

async fn register(kubelet: &Path, endpoint: &str, resource: &str) -> Result<(), String> {
    let channel = terway_rpc::connect_unix(kubelet, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    RegistrationClient::new(channel)
        .register(v1beta1::RegisterRequest {
            version: API_VERSION.into(),
            endpoint: endpoint.into(),
            resource_name: resource.into(),
            options: Some(v1beta1::DevicePluginOptions::default()),
        })
        .await
        .map_err(|s| {
            format!(
                "kubelet refused the registration of {resource}: {}",
                s.message()
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_nodes_advertise_their_secondary_enis_and_trunking_nodes_their_members() {
        assert_eq!(resources(false, false, 8, 48), vec![]);
        let ex = resources(true, false, 8, 48);
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].name.as_str(), ex[0].count), ("aliyun/eni", 7));
        let tr = resources(false, true, 8, 48);
        assert_eq!(
            (tr[0].name.as_str(), tr[0].count),
            ("aliyun/member-eni", 40)
        );
        assert_eq!(
            resources(false, true, 8, 8),
            vec![],
            "no member ENIs without the quota"
        );
        let ids = device_ids(&ex[0]);
        assert_eq!(ids.len(), 7);
        assert_eq!(ids[0].id, "eni-0");
    }

    #[test]
    fn only_our_own_earlier_sockets_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "123-eni.sock",
            "kubelet.sock",
            "123-member-eni.sock",
            "x-eni.sock",
            "99-eni.sock",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let mut got: Vec<String> = stale_sockets(dir.path(), "eni")
            .iter()
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect();
        got.sort();
        assert_eq!(got, ["123-eni.sock", "99-eni.sock"]);
    }
}
