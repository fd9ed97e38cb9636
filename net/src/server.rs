//! Starting the broker: validate, prepare the data dir, load metadata, bind the listeners,
//! run the shards, and accept connections on every one of them.
//!
//! Contract: every start-up failure returns a one-line message naming the problem (bad config
//! value, unusable data dir, port in use, a TLS file that does not load, missing kernel
//! facility); nothing is left running. Every listener (`listeners`, or the one PLAINTEXT
//! listener on `listen`) is bound on every shard; each connection gets its own handlers'
//! context naming the listener it came in on (its advertised address, TLS, SASL session).
//! Before the ready line, one `sluice listener name=... protocol=... listen=ip:port` line per
//! listener is printed; the ready line names the first listener. Each listen port is checked with a plain bind first, so a second broker cannot silently
//! share a port through SO_REUSEPORT; then one SO_REUSEPORT socket per shard is bound. A port
//! in use is retried for `listen_retry_ms` (a broker killed a moment ago still holds it).
//! The metrics endpoint's port is retried the same way, but on its own thread while the broker
//! starts and serves, and giving up only disables the endpoint (logged): metrics are
//! auxiliary, and several brokers on one host may share the default address, so a taken
//! metrics port neither delays nor stops the Kafka listener. A restart right after a kill gets
//! its /metrics and /ready as soon as the old process has let go of the port.
//! `max_connections` and `max_connections_per_ip` hold for the whole broker: every shard's
//! accept loop admits through one shared [`Connections`] count, touched only when a
//! connection is accepted or closed, never on the request path.

use crate::api::Ctx;
use crate::auth;
use crate::peer::{BrokerEndpoint, ClusterView, PeerNet, PeerSetup};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use sluice_core::cluster::NodeId;
use sluice_core::config::BrokerConfig;
use sluice_core::limits::{MAX_IN_FLIGHT_BYTES_PER_SHARD, SHUTDOWN_GRACE_MS};
use sluice_core::listeners::{ListenerSpec, SecurityProtocol, TlsConfig};
use sluice_shard::{runtime, MetadataSnapshot, Shard};
use socket2::{Domain, Socket, Type};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes into the zeroed cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|c| libc::CPU_ISSET(*c, &set)).collect()
    }
}

/// Starts the broker and blocks until it stops. `Err` carries a one-line reason.
pub fn run(config: BrokerConfig) -> Result<(), String> {
    let cpus_allowed = allowed_cpus();
    config.validate(cpus_allowed.len()).map_err(|e| e.to_string())?;
    let cores = config.cores.unwrap_or(cpus_allowed.len());
    let cpus: Vec<usize> = cpus_allowed[..cores].to_vec();
    let specs = config.listener_specs().map_err(|e| e.to_string())?;

    sluice_storage::format::ensure_data_dir(&config.data_dir).map_err(|e| format!("data directory: {e}"))?;
    // Absolute from here on: glommio opens a relative directory path for its fsync as a bad
    // descriptor (EBADF), so `--data-dir ./data` (the default) failed every partition.
    let mut config = config;
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| format!("data directory {}: {e}", config.data_dir.display()))?;
    let _lock = sluice_storage::format::lock_data_dir(&config.data_dir).map_err(|e| format!("data directory: {e}"))?;
    let snapshot = load_metadata(&config, cores)?;
    let sasl = sasl_settings(&config, &specs)?;
    let mapper = principal_mapper(&config.tls)?;
    let clean_start = take_clean_marker(&config.data_dir)?;
    raise_open_file_limit();
    let bound = bind_listeners(&specs, cores, Duration::from_millis(config.listen_retry_ms))?;
    let mut metrics = bind_metrics(&config)?;
    let shown = bound[0].addr;
    let first = &bound[0];
    let (host, port) =
        first.spec.advertised.clone().unwrap_or_else(|| (first.addr.ip().to_string(), first.addr.port()));
    let me = BrokerEndpoint { node_id: NodeId(config.node_id), host, port };
    let voters = config.voters().map_err(|e| e.to_string())?;
    let peers = bind_peers(&config, &snapshot.cluster_id, cores, &me)?;
    // A lone broker's ready line stays as it always was (scripts parse it).
    let peer_shown =
        peers.as_ref().map(|(addr, _)| format!(" node_id={} peer={addr}", config.node_id)).unwrap_or_default();
    let mut peer_setups: Vec<Option<PeerSetup>> = match peers {
        Some((_, setups)) => setups.into_iter().map(Some).collect(),
        None => (0..cores).map(|_| None).collect(),
    };
    let listener_lines: Vec<String> = bound
        .iter()
        .map(|b| format!("sluice listener name={} protocol={} listen={}", b.spec.name, b.spec.protocol.name(), b.addr))
        .collect();
    let data_dir = config.data_dir.display().to_string();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        cores,
        cpus = ?cpus,
        listen = %shown,
        listeners = ?listener_lines,
        data_dir = %data_dir,
        topics = snapshot.topics.len(),
        clean_start,
        "starting sluice"
    );
    let connections = Arc::new(Connections::new(config.max_connections, config.max_connections_per_ip));
    let tls = config.tls.clone();
    let payloads: Vec<Payload> = per_shard_listeners(bound, cores, &tls, &sasl, &mapper)
        .into_iter()
        .zip(peer_setups.iter_mut())
        .enumerate()
        .map(|(i, (listeners, p))| Payload {
            listeners,
            metrics: if i == 0 { metrics.take() } else { None },
            peer: p.take(),
        })
        .collect();
    let session = Duration::from_millis(config.peer_session_timeout_ms);
    let serve = move |shard: Rc<Shard>, payload: Payload| {
        let view = Rc::new(ClusterView::new(me.clone(), &voters, session));
        serve_shard(shard, view, payload, connections.clone())
    };
    let started = Instant::now();
    let data_path = config.data_dir.clone();
    let clean_stop = runtime::run(config, clean_start, cpus, snapshot, payloads, serve, || {
        tracing::info!(listen = %shown, elapsed_ms = millis(started.elapsed()), "ready");
        let mut out = std::io::stdout().lock();
        for line in &listener_lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "sluice ready listen={shown} cores={cores}{peer_shown} data_dir={data_dir}");
        let _ = out.flush();
    })
    .map_err(|e| e.to_string())?;
    if clean_stop {
        leave_clean_marker(&data_path);
    } else {
        tracing::warn!("stopped, but some logs did not close cleanly; the next start scans them");
    }
    Ok(())
}

/// A listener bound for every shard (one SO_REUSEPORT socket each).
struct BoundListener {
    spec: ListenerSpec,
    /// The bound address (the port chosen by the kernel when 0 was asked).
    addr: SocketAddr,
    sockets: Vec<Socket>,
}

/// One listener as handed to one shard, which builds its [`auth::Listener`] from it.
struct ShardListener {
    name: String,
    protocol: SecurityProtocol,
    advertised: (String, u16),
    tls: Option<TlsConfig>,
    sasl: Arc<auth::SaslSettings>,
    principal_mapper: Arc<auth::mapping::PrincipalMapper>,
    socket: Socket,
}

/// Binds every listener (port in use retried, see [`bind_retrying`]); TLS listeners' files are
/// loaded once here so a bad certificate fails the start with its reason.
fn bind_listeners(specs: &[ListenerSpec], cores: usize, retry: Duration) -> Result<Vec<BoundListener>, String> {
    let mut bound = Vec::with_capacity(specs.len());
    for spec in specs {
        let (port, sockets) = bind_all_retrying(spec.addr, cores, retry)?;
        bound.push(BoundListener { spec: spec.clone(), addr: SocketAddr::new(spec.addr.ip(), port), sockets });
    }
    Ok(bound)
}

/// The SASL settings of the broker (mechanisms, PLAIN users, the SCRAM store), and a check
/// that TLS listeners' files load.
fn sasl_settings(config: &BrokerConfig, specs: &[ListenerSpec]) -> Result<Arc<auth::SaslSettings>, String> {
    if specs.iter().any(|s| s.protocol.tls()) {
        crate::tls::server_config(&config.tls).map_err(|e| e.to_string())?;
    }
    let mechanisms = config.sasl.enabled_mechanisms.iter().filter_map(|m| crate::sasl::Mechanism::parse(m)).collect();
    let scram = auth::store::ScramStore::open(&config.data_dir).map_err(|e| format!("data directory: {e}"))?;
    Ok(Arc::new(auth::SaslSettings {
        mechanisms,
        plain_users: config.sasl.plain_users.clone(),
        scram: Arc::new(scram),
    }))
}

/// The TLS certificate principal mapping (`[tls] principal_mapping_rules`, Kafka's
/// `ssl.principal.mapping.rules`; `DEFAULT` when unset): rules that do not parse fail the start.
fn principal_mapper(tls: &TlsConfig) -> Result<Arc<auth::mapping::PrincipalMapper>, String> {
    let Some(rules) = &tls.principal_mapping_rules else { return Ok(Arc::default()) };
    auth::mapping::PrincipalMapper::parse(rules).map(Arc::new).map_err(|e| e.to_string())
}

/// Deals the listeners' sockets out: shard `i` gets socket `i` of every listener.
fn per_shard_listeners(
    bound: Vec<BoundListener>,
    cores: usize,
    tls: &TlsConfig,
    sasl: &Arc<auth::SaslSettings>,
    principal_mapper: &Arc<auth::mapping::PrincipalMapper>,
) -> Vec<Vec<ShardListener>> {
    let mut shards: Vec<Vec<ShardListener>> = (0..cores).map(|_| Vec::with_capacity(bound.len())).collect();
    for b in bound {
        let advertised = b.spec.advertised.clone().unwrap_or_else(|| (b.addr.ip().to_string(), b.addr.port()));
        for (shard, socket) in shards.iter_mut().zip(b.sockets) {
            shard.push(ShardListener {
                name: b.spec.name.clone(),
                protocol: b.spec.protocol,
                advertised: advertised.clone(),
                tls: b.spec.protocol.tls().then(|| tls.clone()),
                sasl: sasl.clone(),
                principal_mapper: principal_mapper.clone(),
                socket,
            });
        }
    }
    shards
}

/// What each shard's `serve` gets: its Kafka listeners, the metrics socket (shard 0) and its
/// part of the peer transport (brokers with peers).
struct Payload {
    listeners: Vec<ShardListener>,
    metrics: Option<MetricsSocket>,
    peer: Option<PeerSetup>,
}

/// For a broker with peers: binds the peer listener on every shard and prepares each shard's
/// transport setup; `None` for a lone broker.
fn bind_peers(
    config: &BrokerConfig,
    cluster_id: &str,
    cores: usize,
    me: &BrokerEndpoint,
) -> Result<Option<(SocketAddr, Vec<PeerSetup>)>, String> {
    let Some(addr) = config.peer_addr().map_err(|e| e.to_string())? else { return Ok(None) };
    let voters = config.voters().map_err(|e| e.to_string())?;
    let mut peer_addresses = std::collections::BTreeMap::new();
    for v in voters.iter().filter(|v| v.id != me.node_id) {
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(&v.address())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("controller_quorum_voters: cannot resolve {} (node {})", v.address(), v.id))?;
        peer_addresses.insert(v.id, resolved);
    }
    let (port, sockets) = bind_all_retrying(addr, cores, Duration::from_millis(config.listen_retry_ms))
        .map_err(|e| format!("peer_listen: {e}"))?;
    let identity = crate::peer::Identity {
        cluster_id: cluster_id.to_string(),
        node_id: me.node_id,
        shards: u16::try_from(cores).map_err(|_| "too many cores".to_string())?,
        client_host: me.host.clone(),
        client_port: me.port,
        voters,
        peer_addresses,
        heartbeat_interval: Duration::from_millis(config.peer_heartbeat_interval_ms),
        session_timeout: Duration::from_millis(config.peer_session_timeout_ms),
    };
    let mesh = MeshBuilder::full(cores, sluice_core::limits::PEER_MESH_CHANNEL_CAPACITY);
    let setups = sockets
        .into_iter()
        .map(|socket| PeerSetup { socket, mesh: mesh.clone(), identity: identity.clone() })
        .collect();
    Ok(Some((SocketAddr::new(addr.ip(), port), setups)))
}

/// Checks the data dir's cluster id against `cluster_id` when it is set: a new data dir takes
/// it, an existing one of another cluster is refused.
fn adopt_cluster_id(config: &BrokerConfig, snapshot: &mut MetadataSnapshot, fresh: bool) -> Result<bool, String> {
    if config.cluster_id.is_empty() || snapshot.cluster_id == config.cluster_id {
        return Ok(false);
    }
    if !fresh {
        return Err(format!(
            "data directory {} belongs to cluster {}, not to cluster_id {}",
            config.data_dir.display(),
            snapshot.cluster_id,
            config.cluster_id
        ));
    }
    snapshot.cluster_id = config.cluster_id.clone();
    Ok(true)
}

/// The metadata snapshot, its partitions placed on the `cores` shards there are and the
/// offsets and transaction state topics present (saved if any of that changed it).
fn load_metadata(config: &BrokerConfig, cores: usize) -> Result<MetadataSnapshot, String> {
    let fresh = !config.data_dir.join("meta").join("metadata.bin").exists();
    let mut snapshot = MetadataSnapshot::load_or_init(&config.data_dir).map_err(|e| e.to_string())?;
    let adopted = adopt_cluster_id(config, &mut snapshot, fresh)?;
    let moved = snapshot.reassign_for(cores);
    if moved > 0 {
        tracing::warn!(partitions = moved, cores, "partitions placed on shards that no longer exist were moved");
    }
    // A cluster member's internal topics are created once, through the metadata log, when a
    // coordinator is first looked for (`sluice_shard::internal::ensure_topic`).
    let lone = config.controller_quorum_voters.is_empty();
    let added =
        lone && sluice_shard::admin::ensure_offsets_topic(&mut snapshot, cores, config.offsets_topic_num_partitions);
    let added_txn = lone
        && sluice_shard::admin::ensure_transaction_topic(&mut snapshot, cores, config.transaction_state_num_partitions);
    if moved > 0 || added || added_txn || adopted {
        snapshot.save(&config.data_dir).map_err(|e| e.to_string())?;
    }
    Ok(snapshot)
}

/// Whether the last run stopped cleanly. A marker left by a clean shutdown lets logs trust
/// their indexes; it is removed now so that a crash of this run is never mistaken for a clean
/// stop.
fn take_clean_marker(data_dir: &std::path::Path) -> Result<bool, String> {
    let marker = data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let clean_start = marker_is_valid(&marker);
    if marker.exists() {
        std::fs::remove_file(&marker)
            .map_err(|e| format!("data directory: cannot remove {}: {e}", marker.display()))?;
        sync_dir(data_dir)?;
    }
    Ok(clean_start)
}

/// After a clean stop: syncs the file system and writes the marker.
fn leave_clean_marker(data_path: &std::path::Path) {
    // Every acknowledged batch was fdatasync'ed before its ack; what the marker vouches for
    // beyond that (indexes, producer snapshots) can be rebuilt. So a marker that cannot be
    // written (a full disk) costs the next start a scan, not data: warn and exit 0.
    match syncfs(data_path).and_then(|()| write_marker(data_path)) {
        Ok(()) => tracing::info!("stopped cleanly"),
        Err(e) => tracing::warn!(
            error = %e,
            "stopped without the clean-shutdown marker; acknowledged data is on disk and the next start scans the logs"
        ),
    }
}

/// One shard's serving: the metrics endpoint (on the shard that got its socket, once it is
/// bound) and an accept loop per listener.
async fn serve_shard(shard: Rc<Shard>, cluster: Rc<ClusterView>, payload: Payload, connections: Arc<Connections>) {
    let Payload { listeners, metrics, peer } = payload;
    let peers = match peer {
        Some(setup) => match PeerNet::start(shard.clone(), cluster.clone(), setup).await {
            Ok(net) => {
                if let Err(e) = crate::peer::start_replication(&net).await {
                    // Without its metadata log a member cannot take part: fail whole.
                    panic!("shard {}: replication not started: {e}", shard.id);
                }
                Some(net)
            }
            Err(e) => {
                tracing::error!(shard = %shard.id, error = %e, "broker-to-broker transport not started");
                None
            }
        },
        None => None,
    };
    if let Some(bound) = metrics {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let Ok(Some(m)) = bound.await else { return };
            // SAFETY: the fd comes from a bound, listening socket we own and hand over whole.
            let listener = unsafe { TcpListener::from_raw_fd(m.into_raw_fd()) };
            crate::metrics_http::serve(shard, listener).await;
        })
        .detach();
    }
    let base = ShardBase {
        shard,
        in_flight: Rc::new(glommio::sync::Semaphore::new(MAX_IN_FLIGHT_BYTES_PER_SHARD as u64)),
        cluster,
        peers,
    };
    let mut loops = Vec::with_capacity(listeners.len());
    for l in listeners {
        let tls = match l.tls.map(crate::tls::TlsReloader::new).transpose() {
            Ok(tls) => tls,
            Err(e) => {
                // Loaded at start-up a moment ago: only a file changed since then gets here.
                tracing::error!(shard = %base.shard.id, listener = %l.name, error = %e, "listener not served: TLS files do not load");
                continue;
            }
        };
        let listener = Rc::new(auth::Listener {
            name: l.name,
            protocol: l.protocol,
            tls,
            sasl: l.sasl,
            principal_mapper: l.principal_mapper,
            advertised_host: l.advertised.0,
            advertised_port: i32::from(l.advertised.1),
        });
        loops.push(accept_loop(base.clone(), listener, l.socket, connections.clone()));
    }
    futures::future::join_all(loops).await;
}

/// What every connection of a shard shares.
#[derive(Clone)]
struct ShardBase {
    shard: Rc<Shard>,
    /// Request bytes read but not yet answered on this shard, across its listeners.
    in_flight: Rc<glommio::sync::Semaphore>,
    /// This shard's cluster view and transport (see `Ctx`).
    cluster: Rc<ClusterView>,
    peers: Option<Rc<PeerNet>>,
}

impl ShardBase {
    /// The handlers' context of a connection accepted on `listener`.
    fn connection(&self, listener: &Rc<auth::Listener>) -> Rc<Ctx> {
        Rc::new(Ctx {
            shard: self.shard.clone(),
            in_flight: self.in_flight.clone(),
            advertised_host: listener.advertised_host.clone(),
            advertised_port: listener.advertised_port,
            listener: listener.clone(),
            session: std::cell::RefCell::new(auth::Session::new(listener.protocol)),
            cluster: self.cluster.clone(),
            peers: self.peers.clone(),
            muted_until: Default::default(),
            share_conn: sluice_shard::share::connect(&self.shard),
        })
    }
}

/// Contents of a complete marker; an empty or partial file (a write cut short) does not count.
const MARKER_CONTENTS: &[u8] = b"clean\n";

fn marker_is_valid(marker: &std::path::Path) -> bool {
    std::fs::read(marker).is_ok_and(|b| b == MARKER_CONTENTS)
}

/// Writes the marker and syncs the directory. On failure the marker is removed (a file created
/// before the write failed must not vouch for anything).
fn write_marker(dir: &std::path::Path) -> Result<(), String> {
    let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
    std::fs::File::create(&marker)
        .and_then(|mut f| {
            f.write_all(MARKER_CONTENTS)?;
            f.sync_all()
        })
        .map_err(|e| format!("cannot write the clean-shutdown marker {}: {e}", marker.display()))
        .and_then(|()| sync_dir(dir))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&marker);
            let _ = sync_dir(dir);
        })
}

/// Segment files and connections each take a descriptor: lift the soft limit to the hard one.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit read and write the rlimit struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                tracing::debug!(from = r.rlim_cur, to = r.rlim_max, "raised the open-file limit");
            }
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < sluice_core::limits::LOW_OPEN_FILE_LIMIT {
            tracing::warn!(
                limit = r.rlim_cur,
                "the open-file limit is low: each partition segment and connection takes one; raise it (ulimit -n, LimitNOFILE=)"
            );
        }
    }
}

/// File left in the data dir by a clean shutdown.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

/// Flushes everything written to the data dir's filesystem (the index files and producer
/// snapshots written without fsync at close) before the marker vouches for them.
fn syncfs(dir: &std::path::Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(format!("syncfs {}: {}", dir.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn sync_dir(dir: &std::path::Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// The metrics endpoint's socket, once its own thread has bound it (`None`: disabled).
type MetricsSocket = futures::channel::oneshot::Receiver<Option<Socket>>;

/// Starts binding the metrics endpoint (shard 0 serves it) on its own thread, retrying a port
/// in use for `listen_retry_ms` like the listen port. Failing is reported, not fatal.
fn bind_metrics(config: &BrokerConfig) -> Result<Option<MetricsSocket>, String> {
    let Some(addr) = config.metrics_addr().map_err(|e| e.to_string())? else { return Ok(None) };
    let retry = Duration::from_millis(config.listen_retry_ms);
    let (tx, rx) = futures::channel::oneshot::channel();
    let bind = move || {
        let bound = bind_retrying("metrics", addr, retry, || {
            let s = new_socket(addr, false)?;
            s.bind(&addr.into())?;
            s.listen(sluice_core::limits::METRICS_LISTEN_BACKLOG)?;
            Ok(s)
        });
        let bound = match bound {
            Ok(s) => {
                let at = s.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(addr);
                tracing::info!(metrics = %at, "metrics endpoint listening (/metrics, /ready)");
                Some(s)
            }
            Err(e) => {
                tracing::warn!(address = %addr, error = %e, "metrics endpoint disabled: cannot listen");
                None
            }
        };
        let _ = tx.send(bound); // the broker may have stopped meanwhile
    };
    std::thread::Builder::new()
        .name("sluice-metrics-bind".into())
        .spawn(bind)
        .map_err(|e| format!("cannot start the metrics endpoint's thread: {e}"))?;
    Ok(Some(rx))
}

/// Binds the listeners, retrying a port in use (see [`bind_retrying`]).
fn bind_all_retrying(addr: SocketAddr, n: usize, retry: Duration) -> Result<(u16, Vec<Socket>), String> {
    bind_retrying("listen", addr, retry, || bind_all(addr, n))
}

/// Runs `bind`, retrying a port in use for up to `retry` (with growing pauses, logged): a
/// broker killed a moment ago still holds its sockets while the kernel tears down its
/// io_uring instance. Any other error, or a port still in use after `retry`, fails at once
/// with the one-line `cannot listen on ADDR: ...`.
fn bind_retrying<T>(
    what: &'static str,
    addr: SocketAddr,
    retry: Duration,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> Result<T, String> {
    use sluice_core::limits::{LISTEN_RETRY_FIRST_PAUSE_MS, LISTEN_RETRY_MAX_PAUSE_MS};
    let started = Instant::now();
    let mut pause = Duration::from_millis(LISTEN_RETRY_FIRST_PAUSE_MS);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match bind() {
            Ok(bound) => {
                if tries > 1 {
                    tracing::info!(address = %addr, tries, waited_ms = millis(started.elapsed()), "{what} port free");
                }
                return Ok(bound);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && started.elapsed() + pause <= retry => {
                if tries == 1 {
                    tracing::warn!(
                        address = %addr,
                        retry_ms = millis(retry),
                        "{what} port in use (a broker that just stopped may still hold it); retrying"
                    );
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(LISTEN_RETRY_MAX_PAUSE_MS));
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }
}

/// Checks the port is free, then binds one SO_REUSEPORT listener per shard.
fn bind_all(addr: SocketAddr, n: usize) -> std::io::Result<(u16, Vec<Socket>)> {
    let probe = new_socket(addr, false)?;
    probe.bind(&addr.into())?;
    let port =
        probe.local_addr()?.as_socket().map(|a| a.port()).ok_or_else(|| std::io::Error::other("no local address"))?;
    drop(probe);
    let bound = SocketAddr::new(addr.ip(), port);
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let s = new_socket(bound, true)?;
        s.bind(&bound.into())?;
        s.listen(sluice_core::limits::LISTEN_BACKLOG)?;
        sockets.push(s);
    }
    Ok((port, sockets))
}

fn new_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    Ok(s)
}

/// Connections open on the whole broker, in total and per client IP, against
/// `max_connections` and `max_connections_per_ip`.
///
/// One value shared by every shard's accept loop. Its lock is taken once when a connection is
/// accepted and once when it closes (a map lookup, never held across an await); requests never
/// touch it, so the request path stays free of shared state.
struct Connections {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused: the counts it met.
#[derive(Debug)]
struct Refused {
    total: usize,
    from_ip: usize,
}

/// An admitted connection's place in [`Connections`]; freed when dropped.
struct Slot {
    connections: Arc<Connections>,
    ip: Option<IpAddr>,
}

impl Connections {
    /// Limits of 0 mean unlimited.
    fn new(max_total: usize, max_per_ip: usize) -> Connections {
        let unlimited = |l: usize| if l == 0 { usize::MAX } else { l };
        Connections { max_total: unlimited(max_total), max_per_ip: unlimited(max_per_ip), open: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent even if a holder panicked: each update is one statement.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection from `ip`, or says which limit it met.
    fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        let mut open = self.lock();
        let from_ip = ip.and_then(|ip| open.per_ip.get(&ip).copied()).unwrap_or(0);
        if open.total >= self.max_total || from_ip >= self.max_per_ip {
            return Err(Refused { total: open.total, from_ip });
        }
        open.total += 1;
        if let Some(ip) = ip {
            *open.per_ip.entry(ip).or_default() += 1;
        }
        Ok(Slot { connections: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = open.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Accepts on this shard's socket of `on` until shutdown, then waits for its connections to
/// finish.
async fn accept_loop(base: ShardBase, on: Rc<auth::Listener>, socket: Socket, connections: Arc<Connections>) {
    let ctx = &base;
    // SAFETY: the fd comes from a bound, listening socket we own and hand over whole.
    let listener = unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) };
    let live = Rc::new(Cell::new(0usize));
    let mut last_warning: Option<Instant> = None;
    let mut last_refusal: Option<Instant> = None;
    loop {
        use futures::future::{select, Either};
        use futures::FutureExt;
        let accepted = match select(listener.accept().boxed_local(), ctx.shard.stopping().boxed_local()).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => break,
        };
        match accepted {
            Ok(stream) => {
                let ip = stream.peer_addr().ok().map(|a| a.ip());
                let slot = match connections.admit(ip) {
                    Ok(slot) => slot,
                    Err(refused) => {
                        sluice_shard::metrics::connection_refused();
                        if last_refusal.is_none_or(|t| {
                            t.elapsed() >= Duration::from_millis(sluice_core::limits::ACCEPT_WARNING_INTERVAL_MS)
                        }) {
                            tracing::warn!(
                                shard = %ctx.shard.id, client = ?ip, connections = refused.total,
                                from_ip = refused.from_ip,
                                "connection refused: max_connections or max_connections_per_ip reached"
                            );
                            last_refusal = Some(Instant::now());
                        }
                        drop(stream);
                        continue;
                    }
                };
                let (ctx, live) = (base.connection(&on), live.clone());
                live.set(live.get() + 1);
                let (shard, share_conn) = (ctx.shard.clone(), ctx.share_conn);
                glommio::spawn_local(async move {
                    crate::conn::serve(ctx, stream).await;
                    // As Kafka: a dropped connection closes its share sessions and releases
                    // their members' acquired records.
                    sluice_shard::share::disconnect(&shard, share_conn);
                    drop(slot);
                    live.set(live.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                // Out of descriptors (or similar): back off, and say so at most once a second.
                if last_warning.is_none_or(|t| {
                    t.elapsed() >= Duration::from_millis(sluice_core::limits::ACCEPT_WARNING_INTERVAL_MS)
                }) {
                    tracing::warn!(shard = %ctx.shard.id, error = %e, "accept failed");
                    last_warning = Some(Instant::now());
                }
                glommio::timer::sleep(Duration::from_millis(sluice_core::limits::ACCEPT_RETRY_PAUSE_MS)).await;
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
    while live.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(sluice_core::limits::SHUTDOWN_POLL_MS)).await;
    }
    if live.get() > 0 {
        tracing::warn!(shard = %ctx.shard.id, connections = live.get(), "connections still open after the grace period");
    }
}

/// A duration in whole milliseconds for logs (saturating: no duration here comes near 584
/// million years).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_hold_across_holders_and_free_on_drop() {
        let c = Arc::new(Connections::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = c.admit(Some(a)).unwrap();
        let s2 = c.admit(Some(a)).unwrap();
        assert_eq!(c.admit(Some(a)).err().expect("refused").from_ip, 2);
        let s3 = c.admit(Some(b)).unwrap();
        assert_eq!(c.admit(Some(b)).err().expect("refused").total, 3);
        drop(s1);
        let s4 = c.admit(Some(a)).unwrap();
        drop((s2, s3, s4));
        assert_eq!(c.lock().total, 0);
        assert!(c.lock().per_ip.is_empty());
        let unlimited = Arc::new(Connections::new(0, 0));
        let many: Vec<_> = (0..100).map(|_| unlimited.admit(Some(a)).unwrap()).collect();
        assert_eq!(unlimited.lock().per_ip[&a], many.len());
    }
}
