//! Every bound of the broker, in one place, with compile-time checks of how they relate.
//!
//! Contract: no other file hard-codes a size, count or duration that bounds resource use; it
//! names a constant here (or a config field whose default is here).

/// Largest request frame accepted (Kafka's `socket.request.max.bytes` default).
pub const MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;
/// Largest record batch accepted (Kafka's `message.max.bytes` default, 1 MiB + overhead).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024 + 12;
/// Requests read from one connection but not yet answered.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 32;
/// Bytes of request frames one connection may have read but not yet answered.
pub const MAX_IN_FLIGHT_BYTES_PER_CONNECTION: usize = 64 * 1024 * 1024;
/// Bytes of request frames all connections of one shard may have read but not yet answered.
pub const MAX_IN_FLIGHT_BYTES_PER_SHARD: usize = 512 * 1024 * 1024;
/// Frames larger than this are large: together they may hold at most
/// `MAX_IN_FLIGHT_BYTES_PER_SHARD - SMALL_REQUESTS_RESERVE_PER_SHARD` of a shard's in-flight
/// budget, so clients sending (or stalling in) huge frames leave room for ordinary requests
/// (librdkafka and the Java client send at most about 1 MB per request by default).
pub const LARGE_REQUEST_BYTES: usize = 2 * 1024 * 1024;
/// Part of each shard's in-flight budget that large frames cannot take.
pub const SMALL_REQUESTS_RESERVE_PER_SHARD: usize = 64 * 1024 * 1024;
/// Default of `request_body_timeout_ms`: how long a client may take to send the rest of a
/// frame once its size arrived and its budget was reserved.
pub const REQUEST_BODY_TIMEOUT_MS: u64 = 30_000;
/// Smallest `request_body_timeout_ms` accepted.
pub const MIN_REQUEST_BODY_TIMEOUT_MS: u64 = 100;
/// Largest `request_body_timeout_ms` accepted (a stalled body holds its budget this long).
pub const MAX_REQUEST_BODY_TIMEOUT_MS: u64 = 3_600_000;
/// Frame bodies are read (and their memory allocated) this much at a time.
pub const FRAME_READ_CHUNK: usize = 1024 * 1024;
/// Bytes of segment-file chunks each shard keeps in its read cache by default
/// (`read_cache_bytes_per_shard`).
pub const DEFAULT_READ_CACHE_BYTES_PER_SHARD: usize = 256 * 1024 * 1024;
/// Share of the host's memory (MemTotal in /proc/meminfo), in percent, that the read caches
/// of all shards take together when `read_cache_bytes_per_shard` is not set: divided among the
/// shards, at least `MIN_READ_CACHE_BYTES_PER_SHARD` and at most
/// `MAX_AUTO_READ_CACHE_BYTES_PER_SHARD` each. Kafka serves consumers from the page cache, which
/// may take all free memory; a quarter leaves the rest to the process and the host. Filled only
/// as data is read or flushed, so an idle broker holds none of it.
pub const READ_CACHE_MEMORY_PERCENT: u64 = 25;
/// Largest read cache per shard chosen from the host's memory (64 GiB).
pub const MAX_AUTO_READ_CACHE_BYTES_PER_SHARD: u64 = 64 << 30;
/// Smallest `read_cache_bytes_per_shard` accepted.
pub const MIN_READ_CACHE_BYTES_PER_SHARD: usize = 128 * 1024 * 1024;
/// Chunks a shard's read cache may hold loaded ahead and not yet read, loads included.
pub const READ_AHEAD_CHUNKS_PER_SHARD: usize = 16;
/// How far ahead of a cached read the chunks of its file are loaded (read-ahead depth, in
/// 1 MiB chunks): a consumer catching up finds its next fetch's chunk loaded and the ones
/// behind it in flight, so it does not wait on the device between fetches.
pub const READ_AHEAD_DEPTH: u64 = 4;
/// Chunks of active segments a shard's read cache may be filling from flushed writes
/// (write-through; each holds up to one 1 MiB chunk, counted in the cache's bytes).
pub const WRITE_THROUGH_CHUNKS_PER_SHARD: usize = 32;
/// A larger read cache fills more chunks from flushed writes at once: up to this fraction
/// (1/N) of its bytes, when that is more than `WRITE_THROUGH_CHUNKS_PER_SHARD` chunks, so that
/// consumers of many partitions written just before read them from memory.
pub const WRITE_THROUGH_CACHE_DIVISOR: usize = 4;
/// Segment files one shard keeps open by default (`max_open_files_per_shard`); idle ones are
/// closed, least recently used first, and reopened when used.
pub const DEFAULT_MAX_OPEN_SEGMENT_FILES_PER_SHARD: usize = 2048;
/// Smallest step of space prepared (zeros written and synced) ahead of a segment's appends.
pub const SEGMENT_PREPARE_MIN_BYTES: u64 = 256 * 1024;
/// Largest step of space prepared ahead of a segment's appends; steps grow with the segment.
/// A partition's last segment may hold this much past its data (zeros, cut at roll and close).
pub const SEGMENT_PREPARE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes of one zero write while preparing: small, so that an append queued behind one at the
/// device, or reaching into it, waits little.
pub const SEGMENT_PREPARE_CHUNK_BYTES: u64 = 128 * 1024;
/// A zero write waits until no request-path write or sync of its shard is in flight, checking
/// every this many microseconds...
pub const SEGMENT_PREPARE_IDLE_CHECK_MICROS: u64 = 100;
/// ...for at most this many checks; then the file waits its turn again, and the shard's
/// preparing task pauses `SEGMENT_PREPARE_BUSY_BACKOFF_MS` (appends meanwhile go on as plain
/// appends).
pub const SEGMENT_PREPARE_IDLE_CHECKS: u32 = 50;
pub const SEGMENT_PREPARE_BUSY_BACKOFF_MS: u64 = 20;
/// A deleted segment file is cut down by this many bytes at a time before it is unlinked:
/// freeing a file's blocks (and, on a `discard` mount, trimming them) holds the device for
/// about 1 ms per 4 MiB here, so a 1 GiB unlink stalled durable writes for 130 ms (issue #19).
pub const SEGMENT_RECLAIM_STEP_BYTES: u64 = 4 * 1024 * 1024;
/// Each cut waits for a moment with none of its shard's request-path writes and syncs in
/// flight, checking every `SEGMENT_PREPARE_IDLE_CHECK_MICROS`, at most this many times; then
/// it runs anyway, so a shard that keeps the device busy still frees its space.
pub const SEGMENT_RECLAIM_IDLE_CHECKS: u32 = 20;
/// The reclaiming task looks at its queue at least this often while it waits for a file's
/// delay, so a file queued later with a shorter delay is not held behind it for long.
pub const SEGMENT_RECLAIM_POLL_MS: u64 = 1000;
/// A deleted segment still held by a reader this long after its delay is unlinked without
/// being cut first (its blocks are then freed when the reader lets go, all at once).
pub const SEGMENT_RECLAIM_HOLDER_WAIT_MS: u64 = 60_000;
/// A due file a reader still holds is looked at again this much later (the others go on).
pub const SEGMENT_RECLAIM_HOLDER_RETRY_MS: u64 = 10;
/// Per-batch entries of the active segment a partition keeps once they are durable (recent
/// reads find their batch through them; older ones through the sparse index and a short scan).
/// A log trims back to this many when it holds twice as many, so its memory does not grow
/// with its batch count (56 bytes an entry).
pub const DENSE_ENTRIES_KEPT: usize = 256;
/// Longest a simulated disk's fdatasync waits for a test to release held syncs (tests only).
pub const SIM_SYNC_HOLD_MAX_MS: u64 = 60_000;
/// Capacity of each cross-core channel (messages, per ordered pair of shards).
pub const CROSS_CORE_CHANNEL_CAPACITY: usize = 1024;
/// Default of `max_mesh_tasks_per_shard`: tasks one shard runs at once for messages from
/// other shards that do local work (produce, fetch reads, offsets, log sizes, metadata
/// installs); further messages wait in the cross-core channels, whose senders then wait.
pub const DEFAULT_MAX_MESH_TASKS_PER_SHARD: usize = 1024;
/// Largest `max_mesh_tasks_per_shard` accepted.
pub const MAX_MESH_TASKS_PER_SHARD: usize = 65_536;
/// Connections the metrics endpoint serves at once. When a new one arrives at the cap, the
/// oldest one still sending its request is closed (a scraper sends its request at once, so
/// idle or slow connections make room); if every one is being answered, the new one is closed.
pub const MAX_METRICS_CONNECTIONS: usize = 64;
/// How long a metrics client may take to send its request, and then to take the answer.
pub const METRICS_IO_TIMEOUT_MS: u64 = 5_000;
/// Largest metrics request read (request line and headers).
pub const MAX_METRICS_REQUEST_BYTES: usize = 8 * 1024;
/// Upper bound on partitions a single topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;
/// Upper bound on a fetch's max_wait_ms that the broker honours.
pub const MAX_FETCH_WAIT_MS: i32 = 60_000;
/// Largest byte count one Fetch response may carry, whatever the client asks.
pub const MAX_FETCH_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Upper bound on how many bytes one partition read returns (besides the first batch).
pub const MAX_PARTITION_READ_BYTES: usize = 16 * 1024 * 1024;
/// Partition reads one owner shard runs at once for one Fetch; it starts no more once the
/// response's `max_bytes` came back, so a fetch reads at most about `max_bytes` plus this
/// many partition reads per owner.
pub const FETCH_READS_IN_FLIGHT: usize = 8;
/// Parts of a response frame (header bytes, record sets) written by one `sendmsg` at most
/// (Linux's IOV_MAX is 1024; a frame's parts beyond this go in further calls).
pub const WRITE_PARTS_PER_CALL: usize = 64;
/// Fetch sessions (KIP-227) one shard keeps (Kafka's `max.incremental.fetch.session.cache.slots`
/// default is 1000 per broker); beyond this only a session idle longer than
/// `FETCH_SESSION_EVICTION_IDLE_MS` is evicted, else the new fetch is answered sessionless.
pub const FETCH_SESSIONS_PER_SHARD: usize = 1000;
/// How long a fetch session must have been unused before a new session may evict it (Kafka's
/// `min.incremental.fetch.session.eviction.ms` default), so clients opening sessions over and
/// over cannot evict the sessions of active consumers.
pub const FETCH_SESSION_EVICTION_IDLE_MS: u64 = 120_000;
/// Partitions all of one shard's fetch sessions may list together (about 150 bytes each). A full
/// fetch listing more than fits even after evicting every idle session gets no session (it is
/// answered sessionless, as Kafka does when its cache is full); an incremental fetch that would
/// grow past it closes its session (FETCH_SESSION_ID_NOT_FOUND: the client starts over).
pub const FETCH_SESSION_PARTITIONS_PER_SHARD: usize = 200_000;
/// Largest records section the broker decompresses to read records in a compressed batch
/// (ListOffsets MAX_TIMESTAMP); a larger one is an error, never an allocation.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Attempts to reserve a producer-id block through the metadata log (each attempt waits for
/// the log to be applied; another broker's concurrent reservation makes one fail).
pub const PRODUCER_ID_BLOCK_ATTEMPTS: usize = 5;
/// `segment.bytes` of the internal topics (`__consumer_offsets`, `__transaction_state`), as
/// Kafka's `offsets.topic.segment.bytes` / `transaction.state.log.segment.bytes`: segments
/// seal (and so can be compacted) long before the 1 GiB default would.
pub const INTERNAL_TOPIC_SEGMENT_BYTES: u64 = 100 * 1024 * 1024;
/// Bytes of keys (plus `COMPACTION_KEY_MAP_ENTRY_OVERHEAD` each) one compaction pass may hold
/// in its key map (Kafka: `log.cleaner.dedupe.buffer.size`); a pass whose dirty keys do not fit
/// cleans up to the last segment whose keys did, and the next pass goes on from there.
pub const COMPACTION_KEY_MAP_BYTES: usize = 32 * 1024 * 1024;
/// Largest segment a compaction pass reads (whole, into memory): a larger one ends the
/// pass's dirty range before it and is left as it is (a topic compacted with the default
/// 1 GiB `segment.bytes` is cleaned only up to its first such segment).
pub const COMPACTION_MAX_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
/// Bytes counted per key-map entry besides the key (hash table slot, offset, allocation).
pub const COMPACTION_KEY_MAP_ENTRY_OVERHEAD: usize = 48;
/// Longest stretch a compaction pass runs on its shard's thread before it pauses (for
/// `COMPACTION_PAUSE_MICROS`) so the shard polls its I/O and runs its request tasks, while the
/// shard has other work: a pass checks the clock after every batch it maps, cleans, merges or
/// scans, and every chunk it reads, so a produce request waits at most about this long (plus
/// one batch's work) for a pass. Issue #23: produce p99 with compaction running within 10% of
/// without.
pub const COMPACTION_SLICE_MICROS: u64 = 250;
/// Longest slice of a compaction pass on a shard with nothing else to do: each pause that ran
/// no other task doubles the slice up to this, the first pause that did brings it back to
/// `COMPACTION_SLICE_MICROS` (so a request arriving at an idle shard waits at most this long,
/// once). Pauses cost cleaning throughput (each is a park and a timer, tens of µs on a VM).
pub const COMPACTION_IDLE_SLICE_MICROS: u64 = 1_000;
/// Longest slice of a compaction pass while its shard has request-path work pending (a
/// partition write, a sync round or a forwarded produce in flight, or an append within
/// `COMPACTION_ACTIVE_WINDOW_MICROS`): the executor sees their wake-ups only when the pass
/// pauses, and a produce's acknowledgement waits for two of them (its write, then its sync
/// round), so each would otherwise wait up to a whole slice (issue #23: records in flight
/// during a pass's CPU phases had a p50 of 2.2 ms against 0.5 ms).
pub const COMPACTION_IO_SLICE_MICROS: u64 = 50;
/// How long after an append to one of its logs a shard counts as taking appends, so that a
/// compaction pass there keeps `COMPACTION_IO_SLICE_MICROS` slices: the next produce may come
/// as a message from another shard, which the executor sees only when the pass pauses.
pub const COMPACTION_ACTIVE_WINDOW_MICROS: u64 = 20_000;
/// How long a compaction pass pauses after each slice while its shard has request-path work
/// pending (as `COMPACTION_IO_SLICE_MICROS`): as long as the slice, so a pass takes at most
/// half of its core while produce traffic runs, and the thread parked meanwhile leaves the
/// core to the host's other threads.
pub const COMPACTION_IO_PAUSE_MICROS: u64 = 50;
/// How long a compaction pass sleeps at the end of each slice (a real sleep, so the executor
/// polls its rings before the pass goes on; the cost to cleaning throughput is about the
/// sleep's real length over the slice).
pub const COMPACTION_PAUSE_MICROS: u64 = 10;
/// A compaction pass reads a sealed segment this much at a time, `COMPACTION_READS_IN_FLIGHT`
/// reads at once, so a whole segment's read never sits on the device ahead of the shard's
/// appends and syncs.
pub const COMPACTION_READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Reads of `COMPACTION_READ_CHUNK_BYTES` a compaction pass has in flight at once (one alone
/// leaves the device idle between a read's completion and the next's submission).
pub const COMPACTION_READS_IN_FLIGHT: usize = 2;
/// Bytes of the dirty segments a compaction pass read to build its key map that it keeps in
/// memory to clean them (instead of reading them a second time); the first dirty segments are
/// kept until this is reached.
pub const COMPACTION_REUSE_BYTES: u64 = 64 * 1024 * 1024;
/// A compaction pass's transaction scan of a sealed segment reads only batch headers (and
/// control batches whole): a read of this much at the next header when the batch before was
/// large, of `COMPACTION_READ_CHUNK_BYTES` when it was small (its neighbours likely follow).
pub const COMPACTION_SCAN_WINDOW_BYTES: usize = 64 * 1024;
/// A compaction swap writes each cleaned `.log` this much at a time (direct I/O, one write in
/// flight), for the same reason.
pub const COMPACTION_WRITE_CHUNK_BYTES: usize = 1024 * 1024;
/// CPU shares of a shard's background task queue (retention and compaction) against the
/// default queue's 1000 (glommio `Shares::Static`): when both have runnable tasks, requests
/// get ten times the background's CPU time.
pub const BACKGROUND_TASK_QUEUE_SHARES: usize = 100;
/// Default of `max_response_bytes_per_shard`: bytes of responses one shard may hold built but
/// not yet written to their sockets (clients that do not read). A Fetch answer is cut to what
/// is left, except its first batch, so the total can exceed this by one batch per connection.
pub const DEFAULT_MAX_RESPONSE_BYTES_PER_SHARD: usize = 256 * 1024 * 1024;
/// Smallest accepted `max_response_bytes_per_shard` (one batch of the default maximum size).
pub const MIN_RESPONSE_BYTES_PER_SHARD: usize = MAX_BATCH_BYTES;
/// Placement averages each shard's appended bytes over this many seconds.
pub const PLACEMENT_LOAD_WINDOW_SECS: u64 = 10;
/// Below this many appended bytes per second (whole broker, over the window) placement ignores
/// load and balances partition counts only.
pub const PLACEMENT_MIN_LOAD_BYTES_PER_SEC: u64 = 1024 * 1024;
/// Longest topic name (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// How long a graceful shutdown waits for in-flight requests before giving up.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Largest offset, relative to its segment's base, a segment may hold: the sparse indexes
/// store relative offsets in 32 bits, and a segment rolls before a batch would end past this
/// (Kafka: `LogSegment.canConvertToRelativeOffset`, `offset - baseOffset <= Int.MaxValue`).
pub const MAX_SEGMENT_RELATIVE_OFFSET: i64 = i32::MAX as i64;
/// Largest byte position (end of a batch) within one segment: index positions are 32-bit,
/// and a segment rolls before a batch would end past this.
pub const MAX_SEGMENT_POSITION: u64 = u32::MAX as u64;
/// Default of `listen_retry_ms`: how long start-up keeps retrying a listen port in use (a
/// broker killed a moment ago still holds it while the kernel tears its sockets down).
pub const DEFAULT_LISTEN_RETRY_MS: u64 = 10_000;
/// Default of `producer_id_expiration_ms`: a producer's idempotence state in a partition is
/// forgotten this long after its last write there (Kafka's `producer.id.expiration.ms`, 1 day).
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: u64 = 86_400_000;
/// Largest `producer_id_expiration_ms` accepted (about 10 years).
pub const MAX_PRODUCER_ID_EXPIRATION_MS: u64 = 315_360_000_000;
/// How often each shard removes expired producer state (Kafka's
/// `producer.id.expiration.check.interval.ms`, 10 minutes; more often when the expiration is
/// shorter).
pub const PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS: u64 = 600_000;
/// Range of `offsets_retention_minutes` accepted (Kafka's `offsets.retention.minutes` is a
/// positive int); in milliseconds it fits an i64 with room to spare.
pub const MIN_OFFSETS_RETENTION_MINUTES: u64 = 1;
pub const MAX_OFFSETS_RETENTION_MINUTES: u64 = i32::MAX as u64;
/// Default of `shard_spin_before_park_us`: an idle shard parks at once (see BENCHMARKS.md,
/// "Spinning before parking", for what spinning changed).
pub const DEFAULT_SHARD_SPIN_BEFORE_PARK_US: u64 = 0;
/// Largest `shard_spin_before_park_us` accepted (10 ms: beyond that a shard is a busy loop).
pub const MAX_SHARD_SPIN_BEFORE_PARK_US: u64 = 10_000;
/// Largest `listen_retry_ms` accepted.
pub const MAX_LISTEN_RETRY_MS: u64 = 600_000;
/// First pause between binds of a port in use; it doubles up to the maximum below.
pub const LISTEN_RETRY_FIRST_PAUSE_MS: u64 = 10;
/// Longest pause between binds of a port in use.
pub const LISTEN_RETRY_MAX_PAUSE_MS: u64 = 250;

/// Batches remembered per producer and partition for deduplicating retries (Kafka: 5, the
/// client's max in-flight requests per connection with idempotence).
pub const REMEMBERED_BATCHES_PER_PRODUCER: usize = 5;
/// Bytes a segment scan (recovery at open, index rebuilds, short read scans) reads at a time
/// (more when one batch is larger).
pub const RECOVERY_SCAN_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Partition logs one shard opens at once when it installs metadata (their I/O overlaps in
/// io_uring; each open holds its last page and a scan buffer).
pub const LOG_OPENS_IN_FLIGHT: usize = 64;
/// Producer ids shard 0 reserves in metadata per write (it hands them out one by one).
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// How often each shard checks its groups' deadlines (session timeouts, rebalance timeouts,
/// the initial rebalance delay): the precision of those timeouts.
pub const GROUP_SWEEP_INTERVAL_MS: u64 = 100;
/// How often each shard removes committed offsets older than `offsets_retention_minutes`.
pub const OFFSETS_EXPIRY_CHECK_INTERVAL_MS: u64 = 60_000;
/// Bytes read at a time when a shard replays a `__consumer_offsets` partition at open.
/// KIP-848 consumer groups: the session timeout (Kafka's `group.consumer.session.timeout.ms`,
/// 45 s), the heartbeat interval given to members (Kafka's
/// `group.consumer.heartbeat.interval.ms` is 5 s; sluice's default is 1 s, because a member
/// hears of a new target only at its next heartbeat, so the interval bounds rebalance time,
/// while a heartbeat that changes nothing costs the shard-local coordinator a few
/// microseconds: see ARCHITECTURE.md, "Consumer groups"), the largest session timeout
/// accepted (Kafka's `group.consumer.max.session.timeout.ms` default, 60 s, widened to 30 min
/// as for classic groups) and the smallest heartbeat interval (Kafka's minimum, 1 s, lowered to
/// 100 ms so tests can run short rebalances).
pub const DEFAULT_CONSUMER_GROUP_SESSION_TIMEOUT_MS: i32 = 45_000;
pub const DEFAULT_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS: i32 = 1_000;
/// A KIP-848 member waiting for partitions other members still have to revoke (state
/// UNRELEASED_PARTITIONS) is given the heartbeat interval divided by this (at least
/// [`MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS`]) until it has them, so it picks them up soon
/// after they are freed; the Java client adopts the interval of every answer.
pub const CONSUMER_GROUP_RECONCILING_INTERVAL_DIVISOR: i32 = 5;
/// Share groups' heartbeat interval (Kafka's `group.share.heartbeat.interval.ms`, 5 s): no
/// revocation round trip, so a shorter one would not speed up a share group's rebalance much.
pub const DEFAULT_SHARE_GROUP_HEARTBEAT_INTERVAL_MS: i32 = 5_000;
pub const MAX_CONSUMER_GROUP_SESSION_TIMEOUT_MS: i32 = 1_800_000;
pub const MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS: i32 = 100;
/// Members of one KIP-848 consumer group (the default and the largest `group_consumer_max_size`):
/// each heartbeat's reconciliation walks every member's partitions.
pub const MAX_CONSUMER_GROUP_MEMBERS: usize = 1_000;
/// Share groups (KIP-932, Kafka's defaults and bounds): members per group (`group.share.max.size`
/// default 200, at most 1,000), the acquisition lock (`group.share.record.lock.duration.ms`
/// 30 s, 1 s–1 h in Kafka; 100 ms allowed here so tests can expire locks quickly), deliveries
/// before a record is archived (`group.share.delivery.count.limit` 5, 2–10), and in-flight
/// records per share-partition (`group.share.partition.max.record.locks` 2,000, 100–10,000;
/// bounds the per-partition state and its state file).
pub const DEFAULT_SHARE_GROUP_MEMBERS: usize = 200;
pub const MAX_SHARE_GROUP_MEMBERS: usize = 1_000;
pub const DEFAULT_SHARE_RECORD_LOCK_DURATION_MS: i32 = 30_000;
pub const MIN_SHARE_RECORD_LOCK_DURATION_MS: i32 = 100;
pub const MAX_SHARE_RECORD_LOCK_DURATION_MS: i32 = 3_600_000;
pub const DEFAULT_SHARE_DELIVERY_COUNT_LIMIT: i32 = 5;
pub const MIN_SHARE_DELIVERY_COUNT_LIMIT: i32 = 2;
pub const MAX_SHARE_DELIVERY_COUNT_LIMIT: i32 = 10;
pub const DEFAULT_SHARE_PARTITION_RECORD_LOCKS: usize = 2_000;
pub const MIN_SHARE_PARTITION_RECORD_LOCKS: usize = 100;
pub const MAX_SHARE_PARTITION_RECORD_LOCKS: usize = 10_000;
/// Share sessions (ShareFetch/ShareAcknowledge epochs) one shard keeps; a new one beyond is
/// refused (Kafka's `max.share.session.cache.size`... per broker; here per shard).
pub const MAX_SHARE_SESSIONS_PER_SHARD: usize = 1_000;
/// Longest a ShareFetch waits between looks at its share-partitions when nothing was
/// acquirable (records also become available when a lock expires, which no log append
/// signals).
pub const SHARE_FETCH_POLL_MS: u64 = 50;
/// Share-partition state calls between brokers (`sluice_shard::share::remote`: the group
/// coordinator's AlterShareGroupOffsets, DeleteShareGroupOffsets, DescribeShareGroupOffsets and
/// DeleteGroups for partitions another broker leads; Kafka's Read/Write/DeleteShareGroupState
/// to the share coordinator): partitions carried by one request, how long the caller waits for
/// its answer (the leader bounds each replicated state write by `COORDINATOR_APPEND_TIMEOUT_MS`),
/// and the rounds it tries, `SHARE_STATE_RETRY_MS` apart, re-reading the leaders each round.
/// Three rounds of the timeout stay within the admin client's 30 s request timeout.
pub const SHARE_STATE_PARTITIONS_PER_REQUEST: usize = 256;
pub const SHARE_STATE_REQUEST_TIMEOUT_MS: u64 = 9_000;
pub const SHARE_STATE_ATTEMPTS: u32 = 3;
pub const SHARE_STATE_RETRY_MS: u64 = 100;
const _: () = assert!(SHARE_STATE_ATTEMPTS as u64 * (SHARE_STATE_REQUEST_TIMEOUT_MS + SHARE_STATE_RETRY_MS) < 30_000);
/// Longest KIP-848 subscription regex accepted (bytes), and the compiled size cap handed to
/// the `regex` crate, so one heartbeat cannot make the broker build a huge automaton.
pub const MAX_SUBSCRIPTION_REGEX_BYTES: usize = 4096;
pub const MAX_SUBSCRIPTION_REGEX_COMPILED_BYTES: usize = 1 << 20;
/// KIP-848 regex subscriptions: a group's regexes are not resolved again sooner than this
/// after a resolution (Kafka's `REGEX_BATCH_REFRESH_MIN_INTERVAL_MS`), and are resolved again
/// at least this often (Kafka's internal `group.consumer.regex.refresh.interval.ms` default),
/// so ACL changes reach the subscription.
pub const CONSUMER_GROUP_REGEX_REFRESH_MIN_INTERVAL_MS: u64 = 10_000;
pub const CONSUMER_GROUP_REGEX_REFRESH_INTERVAL_MS: u64 = 600_000;
pub const OFFSETS_LOAD_READ_BYTES: usize = 8 * 1024 * 1024;
/// How often each shard's transaction coordinator aborts timed-out transactions, completes
/// unfinished ones and expires idle transactional ids (Kafka's
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms` is 10 s): the precision of
/// transaction timeouts.
pub const TXN_SWEEP_INTERVAL_MS: u64 = 1000;
/// Rounds of marker writes an EndTxn (or a sweep's completion) tries before it leaves the
/// transaction prepared for the next sweep, and the pause between rounds (metadata is read
/// again each round: a leader may have moved).
pub const TXN_MARKER_ATTEMPTS: u32 = 5;
pub const TXN_MARKER_RETRY_MS: u64 = 100;
/// How long an AddPartitionsToTxn, AddOffsetsToTxn or transaction version 2 implicit add
/// (Produce v12, TxnOffsetCommit v5) queues on the coordinator behind the operation in flight
/// on its transactional id — the markers and Complete state of the id's previous transaction,
/// whose EndTxn was already answered, or another add (a version 2 producer's partitions on
/// several brokers are added by each leader at the same moment) — before it is answered
/// CONCURRENT_TRANSACTIONS (which clients retry after their backoff, 100 ms for the Java
/// client). Kafka 4.x retries such a produce's add on the broker for up to
/// `add.partitions.to.txn.retry.backoff.max.ms`, 100 ms by default, 20 ms apart; sluice queues
/// the add and runs it as soon as the id is free.
pub const TXN_ADD_WAIT_MS: u64 = 100;
/// How long a coordinator waits for another broker's answer to its markers (the receiver
/// bounds its own replicated appends by `COORDINATOR_APPEND_TIMEOUT_MS`).
pub const TXN_MARKER_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Transactions' markers carried by one broker-to-broker marker request (Kafka's
/// coordinator likewise sends one WriteTxnMarkers per broker with every pending marker).
pub const TXN_MARKERS_PER_REQUEST: usize = 1024;
/// How long a partition leader waits for the answer of a transaction coordinator on another
/// broker when it verifies (or adds) a transactional batch's partition (KIP-890); unanswered,
/// the produce gets NOT_ENOUGH_REPLICAS and the client retries.
pub const TXN_VERIFY_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Longest any call between brokers (`sluice_shard::peer::call`: transaction markers and
/// verifications, share-partition state) waits for its answer: a client's default request
/// timeout (30 s), since a client's request often waits on the call. Each kind's own wait is
/// checked against it where the kind is declared.
pub const PEER_CALL_MAX_TIMEOUT_MS: u64 = 30_000;
const _: () =
    assert!(TXN_MARKER_ATTEMPTS >= 1 && SHARE_STATE_ATTEMPTS >= 1, "a peer call's caller tries at least one round");
const _: () = assert!(TXN_MARKERS_PER_REQUEST >= 1 && SHARE_STATE_PARTITIONS_PER_REQUEST >= 1);
/// Default of `transaction_version`: the finalized `transaction.version` feature, 2 as Kafka
/// 4.x finalizes on a new cluster (KIP-890 part 2).
pub const DEFAULT_TRANSACTION_VERSION: i16 = 2;
/// Highest `transaction.version` this broker implements (its supported range is 0..=this).
pub const MAX_TRANSACTION_VERSION: i16 = 2;
/// Default of `transaction_max_timeout_ms` (Kafka's `transaction.max.timeout.ms`, 15 minutes).
pub const DEFAULT_TRANSACTION_MAX_TIMEOUT_MS: u64 = 900_000;
/// Default of `transactional_id_expiration_ms` (Kafka's `transactional.id.expiration.ms`, 7 days).
pub const DEFAULT_TRANSACTIONAL_ID_EXPIRATION_MS: u64 = 604_800_000;
/// Largest `transactional_id_expiration_ms` accepted (about 10 years).
pub const MAX_TRANSACTIONAL_ID_EXPIRATION_MS: u64 = 315_360_000_000;
/// Default of `transaction_state_num_partitions` (Kafka's `transaction.state.log.num.partitions`
/// is 50; sluice's offsets topic default, 16, serves one broker as well).
pub const DEFAULT_TRANSACTION_STATE_NUM_PARTITIONS: i32 = 16;
/// Rebalance timeout used when a group has no member to take it from (Kafka's consumer default
/// `max.poll.interval.ms`, 5 minutes).
pub const DEFAULT_REBALANCE_TIMEOUT_MS: u64 = 300_000;
/// Shortest period of a shard's periodic timers (retention, producer expiry), whatever the
/// configuration asks.
pub const MIN_TIMER_INTERVAL_MS: u64 = 10;
/// Pause between checks while shards wait for each other at start or stop.
pub const SHARD_BARRIER_POLL_MS: u64 = 2;
/// Buffer each connection reads its socket through.
pub const CONNECTION_READ_BUFFER_BYTES: usize = 64 * 1024;
/// Response parts (records) at least this large are sent from the bytes they share with the
/// read cache instead of being copied into the response buffer.
pub const RESPONSE_SHARE_MIN_BYTES: usize = 16 * 1024;
/// Largest capacity reserved up front for a response's copied bytes (headers, small parts).
pub const RESPONSE_HEAD_CAPACITY_BYTES: usize = 64 * 1024;
/// Capacity reserved up front for the metrics text (it grows as needed).
pub const METRICS_RENDER_CAPACITY_BYTES: usize = 16 * 1024;
/// Backlog of each shard's Kafka listening socket.
pub const LISTEN_BACKLOG: i32 = 1024;
/// Backlog of the metrics listening socket.
pub const METRICS_LISTEN_BACKLOG: i32 = 128;
/// Below this open-file limit the broker warns at start (each segment and connection takes one).
pub const LOW_OPEN_FILE_LIMIT: u64 = 4096;
/// Shortest interval between two warnings of the same kind from the accept loop (refused
/// connections, failed accepts).
pub const ACCEPT_WARNING_INTERVAL_MS: u64 = 1_000;
/// Pause after a failed accept (out of descriptors, or similar) before accepting again.
pub const ACCEPT_RETRY_PAUSE_MS: u64 = 50;
/// Pause between checks while a graceful shutdown waits for connections to finish.
pub const SHUTDOWN_POLL_MS: u64 = 5;
/// Largest fsync latency the storage histograms record (µs); longer ones count as this.
pub const FSYNC_HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Largest per-stage latency the shard histograms record (µs); longer ones count as this.
pub const STAGE_HISTOGRAM_MAX_US: u64 = 600_000_000;
/// Largest response frame the client side (`sluice-client`: admin commands, load generator)
/// accepts from a broker.
pub const MAX_CLIENT_RESPONSE_BYTES: usize = 512 * 1024 * 1024;
/// Capacity the client side reserves up front for encoding one request.
pub const CLIENT_REQUEST_BUFFER_BYTES: usize = 1024 * 1024;
/// `timeout_ms` the client side (load generator and admin commands) puts in its CreateTopics,
/// CreatePartitions and Produce requests (Kafka's client `request.timeout.ms` default).
pub const CLIENT_REQUEST_TIMEOUT_MS: i32 = 30_000;
/// How long the load generator (`sluice bench produce|consume`, `--request-timeout-ms`) waits
/// for one answer, or to hand one request to the socket, before it fails the run as stalled:
/// the requests' own `timeout_ms` plus room for queueing and transfer (Kafka's clients give up
/// after `request.timeout.ms`).
pub const CLIENT_RESPONSE_TIMEOUT_MS: u64 = 45_000;
/// `max_wait_ms` of the load generator's and `sluice consume`'s fetches (Kafka's consumer
/// `fetch.max.wait.ms` default).
pub const CLIENT_FETCH_MAX_WAIT_MS: i32 = 500;
/// Largest latency the load generator's histograms record (µs); longer ones count as this.
pub const CLIENT_LATENCY_HISTOGRAM_MAX_US: u64 = 600_000_000;
/// Most independent readers `sluice bench consume --consumers` runs at once (each is a thread
/// per connection and may hold a whole fetch answer, up to its `--max-bytes`).
pub const CLIENT_MAX_CONSUMERS: u16 = 32;
/// Lines read from stdin by `sluice produce` that may wait for the sender.
pub const CLIENT_STDIN_LINES_QUEUED: usize = 4096;
/// `partition_max_bytes` of `sluice consume`'s fetches (Kafka's consumer
/// `max.partition.fetch.bytes` default).
pub const CLIENT_FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
/// `max_bytes` of `sluice consume`'s fetches (Kafka's consumer `fetch.max.bytes` default).
pub const CLIENT_FETCH_MAX_BYTES: i32 = 50 << 20;
/// Most often `sluice consume --group` commits what it printed.
pub const CLIENT_COMMIT_INTERVAL_MS: u64 = 1_000;
/// `rebalance_timeout_ms` of `sluice consume --group`'s JoinGroup (also how long it waits for
/// the JoinGroup and SyncGroup answers beyond the request timeout).
pub const CLIENT_REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// Shortest heartbeat interval of `sluice consume --group` (a third of the session timeout).
pub const CLIENT_MIN_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// JoinGroup/SyncGroup rounds `sluice consume --group` tries before giving up.
pub const CLIENT_JOIN_ATTEMPTS: u32 = 30;
/// FindCoordinator attempts of the admin commands while the coordinator is not available.
pub const CLIENT_FIND_COORDINATOR_ATTEMPTS: u32 = 50;
/// Pause of the admin commands before asking again after a coordinator or leader moved.
pub const CLIENT_RETRY_PAUSE_MS: u64 = 200;
/// Metadata attempts of the admin commands while a topic's leaders are not known yet (a
/// topic just auto-created), and the pause between them.
pub const CLIENT_LEADER_ATTEMPTS: u32 = 20;
pub const CLIENT_LEADER_PAUSE_MS: u64 = 100;
/// Allocations at least this large are reserved with mmap(MAP_NORESERVE) by the broker's
/// allocator (`net/src/huge_alloc.rs`), so address space is not committed memory.
pub const HUGE_ALLOCATION_BYTES: usize = 1 << 30;

const _: () = assert!(MAX_BATCH_BYTES < MAX_REQUEST_BYTES);
const _: () = assert!(MAX_IN_FLIGHT_BYTES_PER_CONNECTION <= MAX_IN_FLIGHT_BYTES_PER_SHARD);
const _: () =
    assert!(MAX_BATCH_BYTES <= MAX_IN_FLIGHT_BYTES_PER_CONNECTION, "one batch must fit a connection's budget");
const _: () = assert!(
    MAX_REQUEST_BYTES <= MAX_IN_FLIGHT_BYTES_PER_SHARD - SMALL_REQUESTS_RESERVE_PER_SHARD,
    "a frame of the largest size fits what large frames may hold of a shard's budget: it waits, never fails"
);
const _: () =
    assert!(LARGE_REQUEST_BYTES <= SMALL_REQUESTS_RESERVE_PER_SHARD && MAX_BATCH_BYTES <= LARGE_REQUEST_BYTES);
const _: () = assert!(MAX_PARTITION_READ_BYTES <= MAX_FETCH_RESPONSE_BYTES);
const _: () = assert!(
    DEFAULT_MAX_RESPONSE_BYTES_PER_SHARD >= MAX_FETCH_RESPONSE_BYTES,
    "by default one client can be given a whole maximal Fetch answer"
);
const _: () = assert!(PLACEMENT_LOAD_WINDOW_SECS >= 1);
const _: () = assert!(WRITE_PARTS_PER_CALL >= 1 && WRITE_PARTS_PER_CALL <= 1024);
const _: () = assert!(READ_CACHE_MEMORY_PERCENT >= 1 && READ_CACHE_MEMORY_PERCENT <= 50);
const _: () = assert!(MAX_AUTO_READ_CACHE_BYTES_PER_SHARD >= MIN_READ_CACHE_BYTES_PER_SHARD as u64);
const _: () = assert!(READ_AHEAD_DEPTH >= 1 && READ_AHEAD_DEPTH <= READ_AHEAD_CHUNKS_PER_SHARD as u64);
const _: () = assert!(
    (READ_AHEAD_CHUNKS_PER_SHARD + WRITE_THROUGH_CHUNKS_PER_SHARD) * 1024 * 1024 <= MIN_READ_CACHE_BYTES_PER_SHARD / 2,
    "chunks read ahead and filling leave most of the cache to chunks already read"
);
const _: () = assert!(
    SEGMENT_PREPARE_MIN_BYTES <= SEGMENT_PREPARE_MAX_BYTES
        && SEGMENT_PREPARE_MIN_BYTES.is_multiple_of(4096)
        && SEGMENT_PREPARE_CHUNK_BYTES.is_multiple_of(4096)
);
const _: () = assert!(SEGMENT_RECLAIM_STEP_BYTES > 0 && SEGMENT_RECLAIM_POLL_MS > 0);
const _: () = assert!(DEFAULT_LISTEN_RETRY_MS <= MAX_LISTEN_RETRY_MS);
const _: () = assert!(MAX_OFFSETS_RETENTION_MINUTES.checked_mul(60_000).is_some());
const _: () = assert!(DEFAULT_PRODUCER_ID_EXPIRATION_MS <= MAX_PRODUCER_ID_EXPIRATION_MS);
const _: () = assert!(MAX_PRODUCER_ID_EXPIRATION_MS <= i64::MAX as u64);
const _: () = assert!(LISTEN_RETRY_FIRST_PAUSE_MS > 0 && LISTEN_RETRY_FIRST_PAUSE_MS <= LISTEN_RETRY_MAX_PAUSE_MS);
const _: () = assert!(
    MIN_REQUEST_BODY_TIMEOUT_MS <= REQUEST_BODY_TIMEOUT_MS && REQUEST_BODY_TIMEOUT_MS <= MAX_REQUEST_BODY_TIMEOUT_MS
);
const _: () =
    assert!(DEFAULT_MAX_MESH_TASKS_PER_SHARD >= 1 && DEFAULT_MAX_MESH_TASKS_PER_SHARD <= MAX_MESH_TASKS_PER_SHARD);
const _: () = assert!(MAX_IN_FLIGHT_PER_CONNECTION >= 5, "librdkafka pipelines 5 produce requests");
const _: () = assert!(
    MAX_SEGMENT_RELATIVE_OFFSET >= i32::MAX as i64 && MAX_SEGMENT_RELATIVE_OFFSET <= u32::MAX as i64,
    "any one batch (lastOffsetDelta is an i32) fits an empty segment, and the index field holds the rest"
);
const _: () = assert!(
    MAX_REQUEST_BYTES as u64 <= MAX_SEGMENT_POSITION && MAX_SEGMENT_POSITION <= u32::MAX as u64,
    "any one batch fits an empty segment, and the index field holds the position"
);
const _: () = assert!(
    REMEMBERED_BATCHES_PER_PRODUCER >= 1 && REMEMBERED_BATCHES_PER_PRODUCER <= u8::MAX as usize,
    "the producer snapshot stores the count of remembered batches in one byte"
);
const _: () = assert!(RECOVERY_SCAN_CHUNK_BYTES >= 4096 && LOG_OPENS_IN_FLIGHT >= 1);
const _: () = assert!(PRODUCER_ID_BLOCK >= 1);
const _: () = assert!(GROUP_SWEEP_INTERVAL_MS >= 1 && GROUP_SWEEP_INTERVAL_MS < OFFSETS_EXPIRY_CHECK_INTERVAL_MS);
const _: () = assert!(
    OFFSETS_EXPIRY_CHECK_INTERVAL_MS <= MIN_OFFSETS_RETENTION_MINUTES * 60_000,
    "expired offsets are removed at least once per shortest retention"
);
const _: () = assert!(
    DEFAULT_SHARE_GROUP_MEMBERS <= MAX_SHARE_GROUP_MEMBERS
        && MIN_SHARE_RECORD_LOCK_DURATION_MS <= DEFAULT_SHARE_RECORD_LOCK_DURATION_MS
        && DEFAULT_SHARE_RECORD_LOCK_DURATION_MS <= MAX_SHARE_RECORD_LOCK_DURATION_MS
        && MIN_SHARE_DELIVERY_COUNT_LIMIT <= DEFAULT_SHARE_DELIVERY_COUNT_LIMIT
        && DEFAULT_SHARE_DELIVERY_COUNT_LIMIT <= MAX_SHARE_DELIVERY_COUNT_LIMIT
        && MAX_SHARE_DELIVERY_COUNT_LIMIT <= u16::MAX as i32
        && MIN_SHARE_PARTITION_RECORD_LOCKS <= DEFAULT_SHARE_PARTITION_RECORD_LOCKS
        && DEFAULT_SHARE_PARTITION_RECORD_LOCKS <= MAX_SHARE_PARTITION_RECORD_LOCKS
        && MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS < DEFAULT_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS
        && DEFAULT_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS < DEFAULT_CONSUMER_GROUP_SESSION_TIMEOUT_MS
        && MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS < DEFAULT_SHARE_GROUP_HEARTBEAT_INTERVAL_MS
        && DEFAULT_SHARE_GROUP_HEARTBEAT_INTERVAL_MS < DEFAULT_CONSUMER_GROUP_SESSION_TIMEOUT_MS
        && CONSUMER_GROUP_RECONCILING_INTERVAL_DIVISOR >= 1
        && DEFAULT_CONSUMER_GROUP_SESSION_TIMEOUT_MS <= MAX_CONSUMER_GROUP_SESSION_TIMEOUT_MS
);
const _: () = assert!(OFFSETS_LOAD_READ_BYTES >= MAX_BATCH_BYTES, "a replay read returns at least one whole batch");
const _: () = assert!(MIN_TIMER_INTERVAL_MS >= 1 && SHARD_BARRIER_POLL_MS >= 1 && SHUTDOWN_POLL_MS >= 1);
const _: () = assert!(RESPONSE_SHARE_MIN_BYTES <= RESPONSE_HEAD_CAPACITY_BYTES);
const _: () = assert!(LISTEN_BACKLOG >= 1 && METRICS_LISTEN_BACKLOG >= 1);
const _: () = assert!(ACCEPT_RETRY_PAUSE_MS < ACCEPT_WARNING_INTERVAL_MS);
const _: () = assert!(SHUTDOWN_POLL_MS < SHUTDOWN_GRACE_MS);
const _: () = assert!(CLIENT_FETCH_MAX_WAIT_MS >= 0 && CLIENT_FETCH_MAX_WAIT_MS <= MAX_FETCH_WAIT_MS);
const _: () = assert!(
    CLIENT_RESPONSE_TIMEOUT_MS > CLIENT_REQUEST_TIMEOUT_MS as u64
        && CLIENT_RESPONSE_TIMEOUT_MS > CLIENT_FETCH_MAX_WAIT_MS as u64,
    "the load generator waits longer than the broker may take to answer"
);
const _: () = assert!(
    CLIENT_FETCH_PARTITION_MAX_BYTES >= 1
        && CLIENT_FETCH_PARTITION_MAX_BYTES <= CLIENT_FETCH_MAX_BYTES
        && CLIENT_FETCH_MAX_BYTES as usize <= MAX_CLIENT_RESPONSE_BYTES,
    "a consumer fetch's answer fits what the client accepts"
);
const _: () =
    assert!(CLIENT_JOIN_ATTEMPTS >= 1 && CLIENT_FIND_COORDINATOR_ATTEMPTS >= 1 && CLIENT_LEADER_ATTEMPTS >= 1);
const _: () = assert!(CLIENT_REBALANCE_TIMEOUT_MS > 0 && CLIENT_MIN_HEARTBEAT_INTERVAL_MS >= 1);
const _: () = assert!(
    HUGE_ALLOCATION_BYTES > MAX_REQUEST_BYTES,
    "request frames and ordinary buffers stay in the system allocator"
);
const _: () = assert!(
    MAX_CLIENT_RESPONSE_BYTES >= MAX_FETCH_RESPONSE_BYTES && MAX_CLIENT_RESPONSE_BYTES <= i32::MAX as usize,
    "the client takes any Fetch answer the broker gives, and the size field is an i32"
);
const _: () = assert!(TXN_SWEEP_INTERVAL_MS >= 1 && TXN_SWEEP_INTERVAL_MS <= DEFAULT_TRANSACTION_MAX_TIMEOUT_MS);
const _: () = assert!(DEFAULT_TRANSACTION_MAX_TIMEOUT_MS <= i32::MAX as u64, "timeouts travel as i32");
// A key map holds at least the keys of one largest batch, so every pass makes progress.
const _: () = assert!(COMPACTION_KEY_MAP_BYTES >= 2 * MAX_BATCH_BYTES);
const _: () = assert!(COMPACTION_MAX_SEGMENT_BYTES >= MAX_BATCH_BYTES as u64);
const _: () = assert!(COMPACTION_PAUSE_MICROS >= 1 && COMPACTION_PAUSE_MICROS < COMPACTION_SLICE_MICROS);
const _: () = assert!(COMPACTION_IDLE_SLICE_MICROS >= COMPACTION_SLICE_MICROS);
const _: () = assert!(
    COMPACTION_IO_SLICE_MICROS > COMPACTION_PAUSE_MICROS && COMPACTION_IO_SLICE_MICROS <= COMPACTION_SLICE_MICROS
);
const _: () = assert!(COMPACTION_READS_IN_FLIGHT >= 1 && COMPACTION_READS_IN_FLIGHT <= 8);
const _: () = assert!(COMPACTION_REUSE_BYTES <= 2 * COMPACTION_MAX_SEGMENT_BYTES);
// A window holds at least a batch header (sluice_core::batch::HEADER_LEN, 61 bytes).
const _: () =
    assert!(COMPACTION_SCAN_WINDOW_BYTES >= 4096 && COMPACTION_SCAN_WINDOW_BYTES <= COMPACTION_READ_CHUNK_BYTES);
const _: () =
    assert!(COMPACTION_READ_CHUNK_BYTES.is_multiple_of(4096) && COMPACTION_WRITE_CHUNK_BYTES.is_multiple_of(4096));
const _: () = assert!(BACKGROUND_TASK_QUEUE_SHARES >= 1);

// ---- Replication (Raft per partition, #18; shard/src/raft/) ----

/// Ticks of the Raft clock (`RAFT_TICK_MS` each) a follower waits without hearing from a
/// leader before it campaigns (raft-rs randomizes it in [this, 2 × this)).
pub const RAFT_ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const RAFT_HEARTBEAT_TICKS: usize = 2;
/// Length of one Raft tick in milliseconds (election timeout: 10 × 100 ms = 1 to 2 s).
pub const RAFT_TICK_MS: u64 = 100;

/// ElectLeaders waits at most this long (and at most the request's timeout) for the metadata
/// snapshot to name the preferred replicas leaders.
pub const ELECT_LEADERS_MAX_WAIT_MS: u64 = 30_000;
/// How often ElectLeaders looks at the snapshot while it waits.
pub const ELECT_LEADERS_POLL_MS: u64 = 50;
/// Append messages a leader may have unacknowledged per follower per group.
pub const RAFT_MAX_INFLIGHT_MSGS: usize = 256;
/// Largest total entry size of one append message (raft-rs `max_size_per_msg`).
pub const RAFT_MAX_SIZE_PER_MSG: u64 = 1024 * 1024;
/// Most Raft messages the wire decoder accepts in one broker-to-broker batch.
pub const RAFT_MAX_MSGS_PER_BATCH: usize = 65_536;
/// Most entries one decoded append message may carry.
pub const RAFT_MAX_ENTRIES_PER_MSG: usize = 4096;
/// Recent batches per partition whose (index, term, offsets, position) stay in memory (the
/// index ↔ offset window, 40 bytes each); below it a lagging follower is fed from the segments
/// (`RAFT_CATCHUP_*`). At 100,000 partitions this bound is too generous (about 16 GB): trimming to the
/// slowest follower's matched index is the planned refinement.
pub const RAFT_WINDOW_BATCHES: usize = 4096;
/// Bytes of the window's batches a partition keeps in memory (read back for raft-rs without
/// waiting); past it the window is trimmed (never past the applied index) even below
/// `RAFT_WINDOW_BATCHES` batches: what is older is read from the segments (catch-up).
pub const RAFT_WINDOW_BYTES: usize = 16 * 1024 * 1024;
/// A trim moves the window's floor without saving the Raft state file; the state is saved once
/// the floor moved this many batches (or `RAFT_FLOOR_SAVE_BYTES`) since the last save. A reopen
/// after a crash reads at most this much more of the log than the window holds.
pub const RAFT_FLOOR_SAVE_BATCHES: usize = 1024;
/// Bytes of batches the floor may move past before the state is saved (see above).
pub const RAFT_FLOOR_SAVE_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of batches below the Raft window a leader reads from its segments in one catch-up
/// read for a follower far behind, and at most keeps cached per group to answer raft-rs from
/// (the batches of one read; the next read replaces them).
pub const RAFT_CATCHUP_READ_BYTES: usize = 1024 * 1024;
/// Batches between two remembered (index, offset) anchors below the window: a catch-up read
/// starts from the nearest anchor at or below the index asked and counts batch headers on.
pub const RAFT_CATCHUP_ANCHOR_STRIDE: u64 = 1024;
/// Anchors a group remembers below its window (16 bytes each); past it every other one goes.
pub const RAFT_CATCHUP_MAX_ANCHORS: usize = 1024;
/// Catch-up requests a group keeps waiting for a read (one per lagging follower is enough;
/// more are dropped and raft-rs asks again).
pub const RAFT_CATCHUP_MAX_REQUESTS: usize = 8;
/// Consecutive idle ticks after which a Raft group goes quiet (is no longer ticked and sends no
/// heartbeats): idle is a leader with every voter matched, everything committed and nothing
/// pending, or a follower whose leader's broker was heard within an election timeout
/// (shard/src/raft/driver.rs).
pub const RAFT_IDLE_TICKS_BEFORE_QUIET: u32 = 64;
/// Ticks without hearing a peer before the driver treats it as silent. The runtime feeds
/// liveness every tick and reports a peer whose links are down (closed connection, or session
/// timeout passed) at once (`Driver::peer_down`), so this only bounds silence the transport
/// did not report.
pub const RAFT_PEER_SILENCE_TICKS: usize = 2;
/// Ticks between the campaigns of the live replicas of a group whose leader's broker fell
/// silent, in their rank order (rotated per group; the first campaigns at the next tick), so
/// they do not split the vote; also the least pause before such a replica campaigns again.
pub const RAFT_ORPHAN_STAGGER_TICKS: usize = 2;
/// Quick campaigns (the first one included, each after a short staggered pause) an orphaned
/// group makes before it falls back to Raft's own election timeouts.
pub const RAFT_ORPHAN_QUICK_CAMPAIGNS: u32 = 5;
const _: () = assert!(RAFT_HEARTBEAT_TICKS < RAFT_ELECTION_TICKS);
const _: () = assert!(RAFT_PEER_SILENCE_TICKS >= 2, "the clock feeds liveness once per tick");
const _: () = assert!(RAFT_ORPHAN_STAGGER_TICKS >= 1 && RAFT_ORPHAN_STAGGER_TICKS < RAFT_ELECTION_TICKS);
/// Default of `replica_lag_time_max_ms` (Kafka's `replica.lag.time.max.ms`, 30000): a
/// follower that has not caught up with its leader's log end for this long leaves the ISR.
pub const DEFAULT_REPLICA_LAG_TIME_MAX_MS: u64 = 30_000;
/// How often a data group's leader compares its followers' progress with the ISR recorded in
/// the metadata log (a change is proposed with the same leader epoch).
pub const ISR_CHECK_INTERVAL_MS: u64 = 200;
/// How often a data group's leader takes the next step of a reassignment in progress (add
/// learners, promote, remove, record completion).
pub const REASSIGN_CHECK_INTERVAL_MS: u64 = 200;
/// How long a leader waits before asking again to record a reassignment complete.
pub const REASSIGN_RESEND_MS: u64 = 2_000;
const _: () = assert!(REASSIGN_CHECK_INTERVAL_MS < REASSIGN_RESEND_MS);
/// Partition changes (leaders, ISR) shard 0 holds waiting to be recorded in the metadata log
/// (one per partition; beyond it a change is dropped and its leader sends it again).
pub const PARTITION_CHANGES_QUEUED: usize = 65_536;
/// Bounds of `replica_lag_time_max_ms`.
pub const MIN_REPLICA_LAG_TIME_MAX_MS: u64 = 2 * ISR_CHECK_INTERVAL_MS;
pub const MAX_REPLICA_LAG_TIME_MAX_MS: u64 = 3_600_000;
const _: () = assert!(
    MIN_REPLICA_LAG_TIME_MAX_MS <= DEFAULT_REPLICA_LAG_TIME_MAX_MS
        && DEFAULT_REPLICA_LAG_TIME_MAX_MS <= MAX_REPLICA_LAG_TIME_MAX_MS
);
/// How long a coordinator waits for its replicated append to `__consumer_offsets` or
/// `__transaction_state` to commit before it answers COORDINATOR_NOT_AVAILABLE (retriable;
/// Kafka's `offsets.commit.timeout.ms`, 5000).
pub const COORDINATOR_APPEND_TIMEOUT_MS: u64 = 5_000;
const _: () = assert!(COORDINATOR_APPEND_TIMEOUT_MS < TXN_MARKER_REQUEST_TIMEOUT_MS);
const _: () = assert!(COORDINATOR_APPEND_TIMEOUT_MS < SHARE_STATE_REQUEST_TIMEOUT_MS);
// An add queues for its id's operation in flight less than the client's default request
// timeout (30 s).
const _: () = assert!(TXN_ADD_WAIT_MS >= 1 && TXN_ADD_WAIT_MS < 30_000);
/// Default of `leader_imbalance_check_interval_seconds` (Kafka's
/// `leader.imbalance.check.interval.seconds`, 300).
pub const DEFAULT_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS: u64 = 300;
/// Largest `leader_imbalance_check_interval_seconds` accepted (a day).
pub const MAX_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS: u64 = 86_400;
/// Default of `leader_imbalance_per_broker_percentage` (Kafka's
/// `leader.imbalance.per.broker.percentage`, 10).
pub const DEFAULT_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE: u32 = 10;
const _: () = assert!(
    DEFAULT_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS >= 1
        && DEFAULT_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS <= MAX_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS
);
const _: () = assert!(DEFAULT_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE <= 100);
const _: () = assert!(RAFT_MAX_SIZE_PER_MSG <= MAX_REQUEST_BYTES as u64);
const _: () = assert!(RAFT_WINDOW_BATCHES >= RAFT_MAX_ENTRIES_PER_MSG);
const _: () = assert!(RAFT_CATCHUP_READ_BYTES as u64 >= RAFT_MAX_SIZE_PER_MSG);
const _: () = assert!(RAFT_WINDOW_BYTES >= RAFT_CATCHUP_READ_BYTES);
const _: () = assert!(RAFT_CATCHUP_MAX_ANCHORS >= 2 && RAFT_CATCHUP_ANCHOR_STRIDE >= 1);
/// Largest raft-state file accepted at open (term, vote, commit, floor, conf state, epochs).
pub const MAX_RAFT_STATE_FILE_BYTES: usize = 1024 * 1024;

// ---- Cluster: broker-to-broker transport (net/src/peer) ----

/// Largest node id (`node_id`, `controller_quorum_voters`); Kafka's node ids are non-negative
/// 32-bit integers.
pub const MAX_NODE_ID: i32 = i32::MAX;
/// Members `controller_quorum_voters` may list.
pub const MAX_CLUSTER_MEMBERS: usize = 256;
/// Largest broker-to-broker frame (header and body); a larger announced length drops the
/// connection before anything is allocated.
pub const PEER_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Largest header of a broker-to-broker frame (the rest of the frame is the payload).
pub const PEER_MAX_HEADER_BYTES: usize = 4096;
/// Frames queued on one outbound link (one local shard to one remote broker) and not yet
/// written; a full queue refuses `try_send` and makes `send` wait.
pub const PEER_OUTBOUND_QUEUE_FRAMES: usize = 1024;
/// Bytes of frames queued on one outbound link and not yet written.
pub const PEER_OUTBOUND_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// A dial, or a handshake once connected, that takes longer fails (then backoff and retry).
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// First pause before redialling a broker; doubled after each failure up to the cap.
pub const PEER_RECONNECT_MIN_BACKOFF_MS: u64 = 50;
/// Longest pause between two dials of the same broker.
pub const PEER_RECONNECT_MAX_BACKOFF_MS: u64 = 2_000;
/// Default of `peer_heartbeat_interval_ms` (Kafka's `broker.heartbeat.interval.ms` is 2000;
/// Redpanda's Raft heartbeat is 150). One heartbeat per broker pair and shard stands for
/// every Raft group between them (quiet groups send none), so it can be short.
pub const DEFAULT_PEER_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Default of `peer_session_timeout_ms` (Kafka's `broker.session.timeout.ms` is 9000): how
/// long before a silent peer's groups elect new leaders, the bulk of the failover time (#18
/// targets a failover under 1 s).
pub const DEFAULT_PEER_SESSION_TIMEOUT_MS: u64 = 500;
/// Sessions (`peer_session_timeout_ms`) a peer may stay silent and still be listed to clients
/// (Metadata's brokers, not an offline replica, DescribeCluster, FindCoordinator): one late
/// heartbeat of a busy broker must not drop it from Metadata. Raft's failover still starts
/// after one session.
pub const PEER_LISTED_SESSIONS: u32 = 3;
/// Smallest `peer_heartbeat_interval_ms` accepted.
pub const MIN_PEER_HEARTBEAT_INTERVAL_MS: u64 = 10;
/// Largest `peer_session_timeout_ms` accepted.
pub const MAX_PEER_SESSION_TIMEOUT_MS: u64 = 600_000;
/// Inbound broker-to-broker connections one shard holds at once; more are closed at accept.
pub const MAX_PEER_CONNECTIONS_PER_SHARD: usize = 1024;
/// Heartbeat answers an inbound connection holds unwritten; more are dropped (the peer is not
/// reading, and its session will lapse).
pub const PEER_PENDING_ACKS: usize = 16;
/// Frames forwarded between the shards of one broker (an inbound frame for a partition another
/// shard owns), per ordered pair of shards; a full channel makes the reading connection wait.
pub const PEER_MESH_CHANNEL_CAPACITY: usize = 1024;

const _: () =
    assert!(PEER_RECONNECT_MIN_BACKOFF_MS >= 1 && PEER_RECONNECT_MIN_BACKOFF_MS <= PEER_RECONNECT_MAX_BACKOFF_MS);
const _: () =
    assert!(PEER_OUTBOUND_QUEUE_BYTES >= PEER_MAX_FRAME_BYTES, "one largest frame always fits an empty queue");
const _: () = assert!(PEER_MAX_FRAME_BYTES <= u32::MAX as usize, "the frame length travels as a u32");
const _: () = assert!(PEER_MAX_HEADER_BYTES < PEER_MAX_FRAME_BYTES);
const _: () = assert!(DEFAULT_PEER_HEARTBEAT_INTERVAL_MS >= MIN_PEER_HEARTBEAT_INTERVAL_MS);
const _: () = assert!(DEFAULT_PEER_SESSION_TIMEOUT_MS >= 2 * DEFAULT_PEER_HEARTBEAT_INTERVAL_MS);
const _: () = assert!(DEFAULT_PEER_SESSION_TIMEOUT_MS <= MAX_PEER_SESSION_TIMEOUT_MS);

// ---- DescribeQuorum and DescribeTopicPartitions (net/src/api) ----

/// How long a broker waits for the metadata log's leader to answer a forwarded DescribeQuorum
/// before it answers NOT_LEADER_OR_FOLLOWER (retriable: the admin client asks again).
pub const DESCRIBE_QUORUM_FORWARD_TIMEOUT_MS: u64 = 5_000;
/// Forwarded DescribeQuorum requests one shard waits on at once; beyond, it answers
/// NOT_LEADER_OR_FOLLOWER at once (retriable) instead of holding more.
pub const DESCRIBE_QUORUM_FORWARDS_PER_SHARD: usize = 64;
/// Partitions one DescribeTopicPartitions answer carries at most, whatever the request's
/// `response_partition_limit` (Kafka's `max.request.partition.size.limit`, 2000); the rest
/// follows the answer's cursor.
pub const DESCRIBE_TOPIC_PARTITIONS_MAX_PARTITIONS: i32 = 2_000;
// A forwarded answer comes well within the admin client's 30 s request timeout.
const _: () = assert!(DESCRIBE_QUORUM_FORWARD_TIMEOUT_MS < 30_000);
const _: () = assert!(DESCRIBE_TOPIC_PARTITIONS_MAX_PARTITIONS >= 1);

// ---- `sluice cluster start` (net/bin) ----

/// Brokers `sluice cluster start` runs at most.
pub const MAX_CLUSTER_START_BROKERS: u16 = 64;
/// How long `sluice cluster start` waits for every broker's ready line.
pub const CLUSTER_READY_TIMEOUT_MS: u64 = 120_000;
/// How long it waits for the brokers to stop after SIGTERM before it kills them.
pub const CLUSTER_STOP_GRACE_MS: u64 = 30_000;
/// How often it checks for signals and exited children.
pub const CLUSTER_POLL_MS: u64 = 100;

const _: () = assert!(CLUSTER_STOP_GRACE_MS > SHUTDOWN_GRACE_MS, "a broker's own shutdown grace fits the cluster's");
const _: () = assert!(MAX_CLUSTER_START_BROKERS as usize <= MAX_CLUSTER_MEMBERS && MAX_CLUSTER_START_BROKERS < 100);
// --- Security (issue #24): listeners, TLS, SASL -------------------------------------------

/// Listeners a broker may have (`listeners`).
pub const MAX_LISTENERS: usize = 16;
/// A TLS handshake (and for SASL listeners the SASL exchange) must finish within this, or the
/// connection is closed: a client that sends garbage or nothing holds a shard's memory at most
/// this long.
pub const SECURITY_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Largest SaslHandshake/SaslAuthenticate request accepted before authentication (a SCRAM
/// client-first or client-final message, a PLAIN token): anything larger closes the connection.
pub const MAX_SASL_REQUEST_BYTES: usize = 64 * 1024;
/// Longest user name and password accepted in PLAIN and SCRAM messages.
pub const MAX_SASL_NAME_BYTES: usize = 1024;
/// SCRAM iterations: Kafka's minimum (4096) and the most we accept to compute (a client-set
/// count is never used: the stored one is).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;
pub const MAX_SCRAM_ITERATIONS: u32 = 16384;
/// Iterations used when `sluice user add` stores a credential without a count.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;
/// Bytes of random salt stored per SCRAM credential.
pub const SCRAM_SALT_BYTES: usize = 16;
/// Bytes of random server nonce added to the client's.
pub const SCRAM_NONCE_BYTES: usize = 24;
/// SCRAM users the broker stores at most.
pub const MAX_SCRAM_USERS: usize = 10_000;
/// ACL bindings the cluster stores at most (every shard holds them all, indexed).
pub const MAX_ACLS: usize = 100_000;
/// ACL bindings one CreateAcls request may add, or one DeleteAcls filter remove (each is one
/// metadata record).
pub const MAX_ACLS_PER_REQUEST: usize = 1_000;
/// Client-quota entities (users, client ids, pairs, defaults) the cluster stores at most
/// (every shard holds them all).
pub const MAX_QUOTA_ENTITIES: usize = 100_000;
/// Entries one AlterClientQuotas request may hold (each entry's keys are at most the three
/// quota keys: one metadata record each).
pub const MAX_QUOTA_ALTERATIONS_PER_REQUEST: usize = 1_000;
/// Client-quota rates a shard measures at once (one per quota kind and user / client id
/// sharing a quota); a rate unused for `QUOTA_SENSOR_IDLE_MS` is dropped (Kafka's
/// `InactiveSensorExpirationTimeSeconds`), and at the cap the least recently used one goes.
pub const MAX_QUOTA_SENSORS_PER_SHARD: usize = 100_000;
pub const QUOTA_SENSOR_IDLE_MS: i64 = 3_600_000;
/// Kafka's `quota.window.num` and `quota.window.size.seconds`: defaults and bounds.
pub const DEFAULT_QUOTA_WINDOW_NUM: u32 = 11;
pub const MAX_QUOTA_WINDOW_NUM: u32 = 100;
pub const DEFAULT_QUOTA_WINDOW_SIZE_SECONDS: u32 = 1;
pub const MAX_QUOTA_WINDOW_SIZE_SECONDS: u32 = 3_600;
/// Longest a connection stays muted for one throttle (a byte-rate throttle is not bounded
/// by Kafka; this only keeps a wrong quota from muting a client for days).
pub const MAX_QUOTA_THROTTLE_MS: i64 = 3_600_000;

const _: () = assert!(DEFAULT_QUOTA_WINDOW_NUM <= MAX_QUOTA_WINDOW_NUM);
const _: () = assert!(DEFAULT_QUOTA_WINDOW_SIZE_SECONDS <= MAX_QUOTA_WINDOW_SIZE_SECONDS);
const _: () = assert!((MAX_QUOTA_WINDOW_NUM as i64) * (MAX_QUOTA_WINDOW_SIZE_SECONDS as i64) * 1000 < i32::MAX as i64);

/// How often a shard checks whether the TLS certificate, key or CA files changed (their
/// modification times), when it accepts a TLS connection; a change is loaded for the next
/// handshakes.
pub const TLS_RELOAD_CHECK_MS: u64 = 1_000;
/// Largest `connections_max_reauth_ms` (it travels as an i64, and a week is plenty).
pub const MAX_REAUTH_MS: u64 = 7 * 24 * 3600 * 1000;
/// Largest PEM file (certificate chain, key or CA bundle) read.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

const _: () = assert!(MAX_SASL_REQUEST_BYTES <= MAX_REQUEST_BYTES && MAX_SASL_NAME_BYTES < MAX_SASL_REQUEST_BYTES);
const _: () =
    assert!(MIN_SCRAM_ITERATIONS <= DEFAULT_SCRAM_ITERATIONS && DEFAULT_SCRAM_ITERATIONS <= MAX_SCRAM_ITERATIONS);
const _: () = assert!(SCRAM_SALT_BYTES >= 16 && SCRAM_NONCE_BYTES >= 16);

/// Partitions one metadata log record lists (a larger topic is split into a `TopicCreated`
/// and `PartitionsAdded` records), so that a record with the most replicas per partition and
/// the most configs still fits one batch.
pub const METADATA_PARTITIONS_PER_RECORD: usize = 512;
/// Topic configs one metadata record (a topic's explicitly set configs) holds at most.
pub const METADATA_RECORD_MAX_CONFIGS: usize = 64;
/// Longest config name or value a metadata record holds (bytes).
pub const METADATA_RECORD_MAX_STRING_BYTES: usize = 2048;

const _: () = assert!(
    METADATA_PARTITIONS_PER_RECORD * (4 + 4 * MAX_CLUSTER_MEMBERS)
        + METADATA_RECORD_MAX_CONFIGS * 2 * (4 + METADATA_RECORD_MAX_STRING_BYTES)
        + 4 * MAX_TOPIC_NAME_LEN
        + 1024
        <= MAX_BATCH_BYTES,
    "the largest metadata record fits one batch"
);
/// Groups with dynamic group configs (IncrementalAlterConfigs on a GROUP resource) the
/// metadata holds at most; one more is refused. Each group's set is one metadata record, so
/// it shares the topic records' bounds (`METADATA_RECORD_MAX_CONFIGS` keys,
/// `METADATA_RECORD_MAX_STRING_BYTES` per name or value).
pub const MAX_GROUPS_WITH_CONFIGS: usize = 100_000;
/// Kafka 4.4's broker bounds on dynamic group configs (`group.consumer.min/max.heartbeat.interval.ms`,
/// `group.consumer.min/max.session.timeout.ms`, the same for share and streams groups,
/// `group.share.min/max.record.lock.duration.ms`, `group.share.min/max.delivery.count.limit`,
/// `group.share.min/max.partition.max.record.locks`, `group.streams.max.standby.replicas`):
/// a group's value outside them is refused with INVALID_CONFIG, as Kafka does.
pub const GROUP_CONFIG_MIN_HEARTBEAT_INTERVAL_MS: i64 = 5_000;
/// sluice's lower bound for a KIP-848 group's `consumer.heartbeat.interval.ms`
/// (`group.consumer.min.heartbeat.interval.ms`): its own default interval, which is 1 s where
/// Kafka's is 5 s (see [`DEFAULT_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS`]), so a group can be
/// set back to the broker's default.
pub const GROUP_CONFIG_MIN_CONSUMER_HEARTBEAT_INTERVAL_MS: i64 = DEFAULT_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS as i64;
pub const GROUP_CONFIG_MAX_HEARTBEAT_INTERVAL_MS: i64 = 15_000;
pub const GROUP_CONFIG_MIN_SESSION_TIMEOUT_MS: i64 = 45_000;
pub const GROUP_CONFIG_MAX_SESSION_TIMEOUT_MS: i64 = 60_000;
pub const GROUP_CONFIG_MIN_RECORD_LOCK_DURATION_MS: i64 = 15_000;
pub const GROUP_CONFIG_MAX_RECORD_LOCK_DURATION_MS: i64 = 60_000;
pub const GROUP_CONFIG_MAX_STANDBY_REPLICAS: i64 = 2;

/// How long the controller waits for the metadata log to be applied (before deciding a
/// change, and after proposing it) before answering NOT_CONTROLLER (clients retry).
pub const METADATA_APPLY_TIMEOUT_MS: u64 = 30_000;

/// At shutdown, how long a shard's executor waits for its jobs on the blocking thread pool
/// (Raft state writes, metadata saves) before it ends.
pub const SHUTDOWN_BLOCKING_SETTLE_MS: u64 = 10_000;
