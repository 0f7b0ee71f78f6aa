//! The instance metadata service (100.100.100.200 on a real instance). Hardened mode: a token from
//! `PUT /latest/api/token` (header `X-aliyun-ecs-metadata-token-ttl-seconds`) must accompany every
//! read as `X-aliyun-ecs-metadata-token`, otherwise 401.
//!
//! Which instance is asking: the header `X-Emulator-Instance-Id` when present (tests on loopback),
//! otherwise the caller's source IPv4, matched against every instance's primary ENI address (the
//! lab, where each node reaches the service from its own eth0).
//!
//! Only ENIs whose attach has completed (`InUse`, not trunk members) and their current addresses are
//! visible, as on a real instance.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use terway_cloud::EniStatus;

use crate::service::{lock, Service};
use crate::world::{alloc, Eni, Instance, World};

/// Header naming the instance outside the lab.
pub const INSTANCE_HEADER: &str = "x-emulator-instance-id";
/// Token request header.
pub const TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
/// Token header on reads.
pub const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";

/// State of the metadata listener.
pub struct MetadataState {
    svc: Arc<Service>,
    tokens: Mutex<HashMap<String, Instant>>,
}

impl MetadataState {
    /// Serve metadata for `svc`.
    pub fn new(svc: Arc<Service>) -> Arc<Self> {
        Arc::new(Self {
            svc,
            tokens: Mutex::new(HashMap::new()),
        })
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [("content-type", "text/plain")], body.into()).into_response()
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "Not Found")
}

/// Every request to the metadata listener.
pub async fn handle(
    State(st): State<Arc<MetadataState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if path == "/latest/api/token" {
        if method != Method::PUT {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use PUT to get a token");
        }
        return issue_token(&st, &headers);
    }
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "metadata is read with GET");
    }
    let Some(rest) = path
        .strip_prefix("/latest/meta-data/")
        .or_else(|| (path == "/latest/meta-data").then_some(""))
    else {
        return not_found();
    };
    if st.svc.config.metadata_require_token && !token_valid(&st, &headers) {
        return text(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: missing or expired X-aliyun-ecs-metadata-token",
        );
    }
    let world = st.svc.metadata_view();
    let Some(instance) = identify(&world, &headers, peer.ip()) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no instance has primary IP {} and no {INSTANCE_HEADER} header was sent",
                peer.ip()
            ),
        );
    };
    if let Some(role_path) = rest.strip_prefix("ram/security-credentials/") {
        return credentials(&st, instance, role_path);
    }
    match lookup(&world, instance, rest) {
        Some(body) => text(StatusCode::OK, body),
        None => not_found(),
    }
}

fn issue_token(st: &MetadataState, headers: &HeaderMap) -> Response {
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(ttl) = ttl.filter(|t| (1..=21_600).contains(t)) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("{TTL_HEADER} must be an integer in 1..=21600"),
        );
    };
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let token: String = (0..56)
        .map(|_| char::from(A[rng.random_range(0..A.len())]))
        .collect();
    let mut tokens = lock(&st.tokens);
    let now = Instant::now();
    tokens.retain(|_, exp| *exp > now);
    tokens.insert(token.clone(), now + Duration::from_secs(ttl));
    text(StatusCode::OK, token)
}

fn token_valid(st: &MetadataState, headers: &HeaderMap) -> bool {
    let Some(tok) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    lock(&st.tokens)
        .get(tok)
        .is_some_and(|exp| *exp > Instant::now())
}

fn identify<'w>(world: &'w World, headers: &HeaderMap, source: IpAddr) -> Option<&'w Instance> {
    if let Some(id) = headers.get(INSTANCE_HEADER).and_then(|v| v.to_str().ok()) {
        return world.instances.get(id.trim());
    }
    let IpAddr::V4(v4) = source else { return None };
    world.instances.values().find(|inst| {
        world
            .enis
            .get(&inst.primary_eni_id)
            .is_some_and(|e| e.primary_ip == v4)
    })
}

fn credentials(st: &MetadataState, instance: &Instance, role_path: &str) -> Response {
    let Some(role) = instance.ram_role.clone() else {
        return not_found();
    };
    let wanted = role_path.trim_end_matches('/');
    if wanted.is_empty() {
        return text(StatusCode::OK, role);
    }
    if wanted != role {
        return not_found();
    }
    let ttl = Duration::from_secs(st.svc.config.sts_ttl_secs.max(1));
    let cred = lock(&st.svc.auth).sts_credential(&instance.id, &role, ttl);
    let body = serde_json::json!({
        "AccessKeyId": cred.access_key_id,
        "AccessKeySecret": cred.access_key_secret,
        "SecurityToken": cred.security_token,
        "Expiration": terway_cloud::sign::format_timestamp(cred.expires),
        "LastUpdated": terway_cloud::sign::format_timestamp(std::time::SystemTime::now()),
        "Code": "Success",
    });
    (
        StatusCode::OK,
        [("content-type", "text/plain")],
        body.to_string(),
    )
        .into_response()
}

/// ENIs the instance can see: attach completed, not trunk members.
fn visible_enis<'w>(world: &'w World, instance: &'w Instance) -> impl Iterator<Item = &'w Eni> {
    world
        .enis_of(&instance.id)
        .filter(|e| e.status == EniStatus::InUse && e.trunk_eni_id.is_none())
}

fn json_list<T: ToString>(items: &[T]) -> String {
    serde_json::to_string(&items.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

fn lookup(world: &World, inst: &Instance, path: &str) -> Option<String> {
    let primary = world.enis.get(&inst.primary_eni_id)?;
    let vsw = world.vswitches.get(&inst.vswitch_id)?;
    let simple = match path {
        "" => Some(
            [
                "instance-id",
                "instance/",
                "region-id",
                "zone-id",
                "hostname",
                "mac",
                "private-ipv4",
                "vpc-id",
                "vpc-cidr-block",
                "vswitch-id",
                "vswitch-cidr-block",
                "network/",
                "ram/",
            ]
            .join("\n"),
        ),
        "instance-id" => Some(inst.id.clone()),
        "instance/instance-type" => Some(inst.instance_type.clone()),
        "instance/" | "instance" => Some("instance-type".into()),
        "region-id" => Some(world.region_id.clone()),
        "zone-id" => Some(inst.zone_id.clone()),
        "hostname" => Some(inst.hostname.clone()),
        "mac" => Some(primary.mac.clone()),
        "private-ipv4" => Some(primary.primary_ip.to_string()),
        "vpc-id" => Some(world.vpc.id.clone()),
        "vpc-cidr-block" => Some(world.vpc.cidr.to_string()),
        "vswitch-id" => Some(vsw.id.clone()),
        "vswitch-cidr-block" => Some(vsw.cidr.to_string()),
        "network/" | "network" => Some("interfaces/".into()),
        "network/interfaces/" | "network/interfaces" => Some("macs/".into()),
        "ram/" | "ram" => Some("security-credentials/".into()),
        "network/interfaces/macs/" | "network/interfaces/macs" => Some(
            visible_enis(world, inst)
                .map(|e| format!("{}/", e.mac))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    };
    if simple.is_some() {
        return simple;
    }
    let rest = path.strip_prefix("network/interfaces/macs/")?;
    let (mac, key) = rest.split_once('/').unwrap_or((rest, ""));
    let mac = mac.to_ascii_lowercase();
    let eni = visible_enis(world, inst).find(|e| e.mac == mac)?;
    let evsw = world.vswitches.get(&eni.vswitch_id)?;
    match key {
        "" => Some(
            [
                "network-interface-id",
                "netmask",
                "primary-ip-address",
                "gateway",
                "private-ipv4s",
                "ipv6s",
                "ipv6-gateway",
                "vswitch-id",
                "vswitch-cidr-block",
                "vswitch-ipv6-cidr-block",
                "vpc-id",
                "vpc-cidr-block",
                "vpc-ipv6-cidr-blocks",
            ]
            .join("\n"),
        ),
        "network-interface-id" => Some(eni.id.clone()),
        "netmask" => Some(evsw.cidr.netmask().to_string()),
        "primary-ip-address" => Some(eni.primary_ip.to_string()),
        "gateway" => Some(alloc::gateway(evsw).to_string()),
        "private-ipv4s" => Some(json_list(&eni.all_ipv4())),
        "ipv6s" if !eni.ipv6.is_empty() => Some(json_list(&eni.ipv6)),
        "ipv6-gateway" => alloc::ipv6_gateway(evsw).map(|g| g.to_string()),
        "vswitch-id" => Some(evsw.id.clone()),
        "vswitch-cidr-block" => Some(evsw.cidr.to_string()),
        "vswitch-ipv6-cidr-block" => evsw.ipv6_cidr.map(|n| n.to_string()),
        "vpc-id" => Some(world.vpc.id.clone()),
        "vpc-cidr-block" => Some(world.vpc.cidr.to_string()),
        "vpc-ipv6-cidr-blocks" => world.vpc.ipv6_cidr.map(|n| json_list(&[n])),
        _ => None,
    }
}
