//! Exactly-once output: a transactional producer whose transactions carry the output
//! records, dead letters included, and the input offsets (with the crash guard's marks as
//! their metadata) of the consumer group, sent with the consumer's current group metadata
//! (KIP-447: a worker whose generation is stale cannot commit).
//!
//! [`KafkaTransactions`] is the sink ([`OutputSink`]: `write` begins a transaction when none is
//! open) and offers its [`Transactions`] (commit, abort, recover, read committed offsets):
//! blocking calls, which the engine makes off the async runtime with timeouts below
//! `max.poll.interval.ms`. librdkafka implements the classic transaction protocol (no
//! KIP-890): a commit whose answer never came has an unknown outcome, so it is reported as
//! [`TxnError::Fatal`]; the engine recreates the producer (whose `init_transactions` with the
//! same `transactional.id` finishes or aborts what the old one left) and reads the group's
//! committed offsets to learn which it was.
//!
//! A broker that refuses a record as too large spoils the whole open transaction (and the
//! abort that follows costs a producer epoch bump): records over an output topic's
//! `max.message.bytes`, read at start, are refused here before they are produced, so the
//! engine replaces them without an abort. A refusal that still comes from the broker (a
//! lower broker-wide limit) is handled by aborting and replacing, slower.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use fusionstream_core::lock;
use fusionstream_core::position::PartitionId;
use fusionstream_core::record::Stream;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use fusionstream_core::crash_guard::Mark;

use super::commit::{drained_idle_partitions, offsets_list};
use super::consumer::{set_mark, KafkaShared};
use super::sink::{await_deliveries, produce, publish_error};
use super::KafkaConnection;
use crate::crash_marks::CrashGuard;
use crate::ports::{OutputSink, PublishError, Transactions, TxnError};

/// How a transactional worker writes.
#[derive(Debug, Clone)]
pub struct TransactionSettings {
    /// `transactional.id`: stable per replica (a restarted worker with the same id fences
    /// the one it replaces).
    pub transactional_id: String,
    /// `transaction.timeout.ms`: the broker aborts a transaction left open longer.
    pub transaction_timeout: Duration,
    /// Bound on `init_transactions` when the producer is created or recreated.
    pub init_timeout: Duration,
    /// Each output topic's `max.message.bytes` ([`KafkaConnection::message_limits`]), in
    /// stream order: a record over it is refused before it is produced, since a broker's
    /// refusal spoils the whole transaction (`None`: not checked here).
    pub message_limits: [Option<usize>; Stream::COUNT],
}

/// What a record costs beside its key, value and headers in a one-record batch (the batch
/// header and the record's own fields, rounded up).
const RECORD_OVERHEAD: usize = 128;

/// The sink of an exactly-once worker.
pub struct KafkaTransactions {
    control: Arc<Control>,
    topics: [String; Stream::COUNT],
    headers: Vec<(String, String)>,
    /// Deliveries awaited by the next flush, with the transaction they were written in.
    pending: Vec<(u64, usize, DeliveryFuture)>,
}

impl std::fmt::Debug for KafkaTransactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransactions")
            .field("control", &self.control)
            .field("topics", &self.topics)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// The producer and what its transactions commit through.
struct Control {
    config: ClientConfig,
    settings: TransactionSettings,
    producer: Mutex<FutureProducer>,
    /// A transaction is open (begun and neither committed nor aborted).
    open: AtomicBool,
    /// Transactions begun so far: deliveries of an aborted one are not waited for.
    begun: AtomicU64,
    group: KafkaShared,
    guard: Option<Arc<CrashGuard>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("transactional_id", &self.settings.transactional_id)
            .field("open", &self.open.load(SeqCst))
            .finish_non_exhaustive()
    }
}

impl KafkaTransactions {
    /// A transactional producer writing stream `s` to `topics[s.index()]`, committing the
    /// offsets of the consumer of `group`; with `guard`, its marks go with the offsets.
    /// Blocks on `init_transactions` (which fences an older producer with the same id).
    pub fn new(
        conn: &KafkaConnection,
        settings: TransactionSettings,
        topics: [String; Stream::COUNT],
        headers: Vec<(String, String)>,
        group: KafkaShared,
        guard: Option<Arc<CrashGuard>>,
    ) -> anyhow::Result<Self> {
        let mut config = conn.client_config();
        config
            .set("transactional.id", &settings.transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set(
                "transaction.timeout.ms",
                settings.transaction_timeout.as_millis().to_string(),
            );
        // The limit applies to a whole record batch: batches never grow past the smallest.
        if let Some(min) = settings.message_limits.iter().flatten().min() {
            let batch = min.saturating_sub(RECORD_OVERHEAD).clamp(1, 1_000_000);
            config.set("batch.size", batch.to_string());
        }
        let producer = create(&config, settings.init_timeout)?;
        if let Some(g) = &guard {
            g.commit_in_transactions();
        }
        tracing::info!(
            transactional_id = %settings.transactional_id,
            "transactional producer ready (exactly-once)"
        );
        Ok(Self {
            control: Arc::new(Control {
                config,
                settings,
                producer: Mutex::new(producer),
                open: AtomicBool::new(false),
                begun: AtomicU64::new(0),
                group,
                guard,
            }),
            topics,
            headers,
            pending: Vec::new(),
        })
    }
}

/// A producer from `config`, its transactions initialised.
fn create(config: &ClientConfig, timeout: Duration) -> anyhow::Result<FutureProducer> {
    let producer: FutureProducer = config
        .create()
        .context("creating the transactional producer")?;
    producer
        .init_transactions(timeout)
        .context("initialising transactions")?;
    Ok(producer)
}

/// A transactional call's error by what the engine does next.
fn txn_error(e: KafkaError, committing: bool) -> TxnError {
    let fenced = |c: RDKafkaErrorCode| {
        matches!(
            c,
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
        )
    };
    match &e {
        KafkaError::Transaction(r) if fenced(r.code()) => TxnError::Fenced(Box::new(e)),
        KafkaError::Transaction(r) if r.is_fatal() => TxnError::Fatal(Box::new(e)),
        KafkaError::Transaction(r) if r.txn_requires_abort() => TxnError::Abortable(Box::new(e)),
        // A commit that timed out or failed retriably: committed or not, nobody knows.
        KafkaError::Transaction(_) if committing => TxnError::Fatal(Box::new(e)),
        _ => TxnError::Abortable(Box::new(e)),
    }
}

impl Control {
    fn producer(&self) -> FutureProducer {
        lock(&self.producer).clone()
    }

    /// Begin a transaction unless one is open.
    fn begin(&self) -> Result<(), TxnError> {
        if self.open.load(SeqCst) {
            return Ok(());
        }
        self.producer()
            .begin_transaction()
            .map_err(|e| txn_error(e, false))?;
        self.begun.fetch_add(1, SeqCst);
        self.open.store(true, SeqCst);
        Ok(())
    }

    fn offsets(
        &self,
        positions: &[(PartitionId, u64)],
        clean: &[PartitionId],
    ) -> Result<TopicPartitionList, TxnError> {
        offsets_list(&self.group, self.guard.as_deref(), positions, |p| {
            clean.contains(&p)
        })
        .map_err(|e| TxnError::Abortable(e.into()))
    }
}

impl Transactions for Control {
    fn commit(
        &self,
        positions: &[(PartitionId, u64)],
        clean: &[PartitionId],
        last: bool,
        timeout: Duration,
    ) -> Result<(), TxnError> {
        self.begin()?;
        let producer = self.producer();
        let mut tpl = self.offsets(positions, clean)?;
        let consumer = self.group.consumer();
        if let (true, Some(c), Some(_)) = (last, &consumer, &self.guard) {
            for (topic, p, next) in drained_idle_partitions(c, &tpl, timeout / 2) {
                let clean = Mark {
                    clean: true,
                    attempt: None,
                };
                if tpl
                    .add_partition_offset(&topic, p, Offset::Offset(next))
                    .is_ok()
                {
                    set_mark(&mut tpl, &topic, p, clean);
                }
            }
        }
        if tpl.count() > 0 {
            // The group's metadata now, never cached: a generation that moved on fences us.
            let consumer = consumer.ok_or_else(|| {
                TxnError::Abortable(anyhow::anyhow!("no consumer: no group metadata").into())
            })?;
            let cgm = consumer.group_metadata().ok_or_else(|| {
                TxnError::Abortable(anyhow::anyhow!("the consumer has no group metadata").into())
            })?;
            producer
                .send_offsets_to_transaction(&tpl, &cgm, timeout)
                .map_err(|e| txn_error(e, false))?;
        }
        producer
            .commit_transaction(timeout)
            .map_err(|e| txn_error(e, true))?;
        self.open.store(false, SeqCst);
        Ok(())
    }

    fn abort(&self, timeout: Duration) -> Result<(), TxnError> {
        if !self.open.load(SeqCst) {
            return Ok(());
        }
        self.producer()
            .abort_transaction(timeout)
            .map_err(|e| txn_error(e, false))?;
        self.open.store(false, SeqCst);
        Ok(())
    }

    fn recover(&self, timeout: Duration) -> Result<(), TxnError> {
        tracing::warn!(
            transactional_id = %self.settings.transactional_id,
            "recreating the transactional producer"
        );
        let producer = create(&self.config, timeout).map_err(|e| {
            // init_transactions refused: another producer holds the id for good, or the
            // cluster is away (retried by the engine).
            let fenced = e.chain().any(|c| {
                c.downcast_ref::<KafkaError>()
                    .is_some_and(|k| matches!(txn_error(k.clone(), false), TxnError::Fenced(_)))
            });
            if fenced {
                TxnError::Fenced(e.into())
            } else {
                TxnError::Fatal(e.into())
            }
        })?;
        *lock(&self.producer) = producer;
        self.open.store(false, SeqCst);
        Ok(())
    }

    fn committed(
        &self,
        partitions: &[PartitionId],
        timeout: Duration,
    ) -> anyhow::Result<Vec<(PartitionId, Option<u64>)>> {
        let consumer = self.group.consumer().context("no consumer")?;
        let mut tpl = TopicPartitionList::new();
        let mut ids = Vec::new();
        for id in partitions {
            if let Some((topic, p)) = self.group.map.get(*id) {
                tpl.add_partition(&topic, p);
                ids.push((*id, topic, p));
            }
        }
        let got = consumer
            .committed_offsets(tpl, timeout)
            .context("reading the committed offsets")?;
        Ok(ids
            .into_iter()
            .map(|(id, topic, p)| {
                let at = got
                    .find_partition(&topic, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) if o >= 0 => Some(o as u64),
                        _ => None,
                    });
                (id, at)
            })
            .collect())
    }
}

impl OutputSink for KafkaTransactions {
    /// Queue one record into the open transaction (begun if none is).
    async fn write(
        &mut self,
        stream: Stream,
        key: &str,
        json: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        self.control.begin().map_err(|e| match e {
            TxnError::Abortable(b) => PublishError::Retryable(b),
            TxnError::Fatal(b) | TxnError::Fenced(b) => PublishError::Fatal(b),
        })?;
        if let Some(limit) = self.control.settings.message_limits[stream.index()] {
            let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
            let size = json.len() + key.len() + headers + traceparent.map_or(0, str::len);
            if size + RECORD_OVERHEAD > limit {
                return Err(PublishError::TooLarge(
                    format!(
                        "a {size}-byte record is over {}'s max.message.bytes ({limit})",
                        self.topics[stream.index()]
                    )
                    .into(),
                ));
            }
        }
        let producer = self.control.producer();
        let topic = &self.topics[stream.index()];
        let f = produce(&producer, topic, &self.headers, key, json, traceparent)
            .await
            .map_err(publish_error)?;
        let txn = self.control.begun.load(SeqCst);
        self.pending.push((txn, stream.index(), f));
        Ok(())
    }

    /// Wait for the delivery of every record written since the last flush (they stay
    /// invisible to `read_committed` readers until the transaction commits).
    async fn flush(&mut self) -> Result<(), PublishError> {
        // Records of an aborted transaction were purged: nothing to wait for.
        let open = self.control.open.load(SeqCst);
        let current = self.control.begun.load(SeqCst);
        let pending: Vec<(usize, DeliveryFuture)> = self
            .pending
            .drain(..)
            .filter(|(txn, ..)| open && *txn == current)
            .map(|(_, i, f)| (i, f))
            .collect();
        // Every delivery is awaited: a refusal as too large purges the rest of the
        // transaction, and that refusal (not a purged record's error) says what to do.
        let mut first: Option<PublishError> = None;
        for (i, f) in pending {
            let Err(e) = await_deliveries(&mut vec![(i, f)], &self.topics).await else {
                continue;
            };
            let e = publish_error(e);
            let first_too_large = matches!(first, Some(PublishError::TooLarge(_)));
            if first.is_none() || (matches!(e, PublishError::TooLarge(_)) && !first_too_large) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn transactions(&self) -> Option<Arc<dyn Transactions>> {
        Some(self.control.clone())
    }
}
