//! The ingest transaction of [`Store::commit_events`](crate::store::Store::commit_events) on
//! PostgreSQL.
//!
//! A run's rows are computed in the hub and sent as binary arrays (`unnest`), every
//! statement of the transaction pipelined on one connection: the hub does not wait for one
//! statement's answer before sending the next, so a commit costs three round trips
//! (`BEGIN`, the pipelined statements, `COMMIT`) whatever the number of tables it writes.
//!
//! Two paths give the same result:
//!
//! - **Optimistic** (the norm: a run of events the hub has never seen): the rows of every
//!   event are planned as if all were new, and the event keys and transaction ids are
//!   inserted with `ON CONFLICT DO NOTHING` at the head of the same pipeline as the rows.
//!   When both inserts report as many rows as were sent, every event was new and the
//!   transaction commits.
//! - **Careful** (a replay, a conflict, a transaction id held by another device): when
//!   either insert reports fewer rows, the optimistic transaction is rolled back — nothing
//!   of it was ever visible — and the run is committed again statement by statement: the
//!   keys that went in decide which events are new, known keys are compared (duplicate or
//!   conflict), the registry decides the same for transaction ids, and only then are rows
//!   planned for the events that are really new.

use std::collections::{HashMap, HashSet};

use futures::future::{join_all, try_join_all};
use jiff::tz::TimeZone;
use storesync_protocol::domain::{Alert, AlertKind, AlertState, Severity};
use storesync_protocol::event::{Event, EventBody, StreamHead, StreamId};
use storesync_protocol::ids::AlertId;
use storesync_protocol::time::{EventTime, UnixMillis};
use tokio_postgres::types::ToSql;

use super::{CHANGES_CHANNEL, PgStore, tenant_sql};
use crate::ingest::{self, Plan, alert_state_rank, body_kind, body_time, event_bytes};
use crate::store::{Change, CommitGate, CommitOutcome, GateOpener, StoreError, key_text, now_ms};

/// Event identity: new keys go in, known keys are duplicates or conflicts.
const INSERT_KEYS: &str = "INSERT INTO event_keys (tenant_id, device_id, epoch, class, seq, content_hash, chain_hash) \
     SELECT $1, $2, $3, $4, s, c, h FROM unnest($5::bigint[], $6::bytea[], $7::bytea[]) AS u(s, c, h) \
     ON CONFLICT DO NOTHING";

/// Idempotency of POS transactions across devices and epochs.
const INSERT_TXN_IDS: &str = "INSERT INTO transaction_ids (tenant_id, transaction_id, content_hash) \
     SELECT $1, t, h FROM unnest($2::text[], $3::bytea[]) AS u(t, h) ON CONFLICT DO NOTHING";

/// One statement of a pipeline, owning its parameters.
struct Statement<'a> {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send + 'a>>,
}

impl<'a> Statement<'a> {
    fn new(sql: impl Into<String>) -> Statement<'a> {
        Statement {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    fn bind(mut self, value: impl ToSql + Sync + Send + 'a) -> Statement<'a> {
        self.params.push(Box::new(value));
        self
    }
}

/// Sends `statements` in order without waiting for answers in between (statements are
/// prepared once per connection) and returns each one's result, in order. A statement that
/// fails aborts the transaction, so the ones after it fail too.
async fn pipeline(
    tx: &deadpool_postgres::Transaction<'_>,
    statements: &[Statement<'_>],
) -> Result<Vec<Result<u64, tokio_postgres::Error>>, StoreError> {
    let prepared = try_join_all(statements.iter().map(|s| tx.prepare_cached(&s.sql))).await?;
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = statements
        .iter()
        .map(|s| {
            s.params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect()
        })
        .collect();
    // join_all polls (and so sends) in order; the connection answers in order.
    Ok(join_all(
        prepared
            .iter()
            .zip(&params)
            .map(|(statement, params)| tx.execute(statement, params)),
    )
    .await)
}

/// The first error of a pipeline's results, if any.
fn first_error(results: Vec<Result<u64, tokio_postgres::Error>>) -> Result<(), StoreError> {
    for result in results {
        result?;
    }
    Ok(())
}

/// What every event of a run contributes, computed once.
struct RunColumns {
    seqs: Vec<i64>,
    chains: Vec<[u8; 32]>,
    /// Postcard bytes, as kept in the event tables and dead letters.
    bytes: Vec<Vec<u8>>,
}

impl RunColumns {
    fn new(events: &[Event]) -> RunColumns {
        RunColumns {
            seqs: events.iter().map(|e| e.key.seq.0 as i64).collect(),
            chains: events.iter().map(|e| e.chain_hash().0).collect(),
            bytes: events.iter().map(event_bytes).collect(),
        }
    }

    fn keys_statement<'a>(
        &'a self,
        stream: &'a StreamId,
        events: &'a [Event],
        sql: &str,
    ) -> Statement<'a> {
        Statement::new(sql)
            .bind(stream.tenant.as_str())
            .bind(stream.device.as_str())
            .bind(stream.epoch.0 as i64)
            .bind(stream.class as i16)
            .bind(self.seqs.clone())
            .bind(
                events
                    .iter()
                    .map(|e| &e.content_hash.0[..])
                    .collect::<Vec<&[u8]>>(),
            )
            .bind(self.chains.iter().map(|h| &h[..]).collect::<Vec<&[u8]>>())
    }
}

/// The transaction ids (and content hashes) of the transaction events among `indexes`.
fn txn_ids<'a>(events: &'a [Event], indexes: &[usize]) -> (Vec<&'a str>, Vec<&'a [u8]>) {
    indexes
        .iter()
        .filter_map(|&i| match &events[i].body {
            EventBody::Transaction(t) => {
                Some((t.transaction_id.as_str(), &events[i].content_hash.0[..]))
            }
            _ => None,
        })
        .unzip()
}

/// The events decided on: what is applied, what is kept as a dead letter, what was seen.
#[derive(Default)]
struct Decision {
    outcome: CommitOutcome,
    /// Indexes of new events to apply.
    apply: Vec<usize>,
    /// Indexes of events kept as dead letters, with the reason.
    dead: Vec<(usize, String)>,
}

impl Decision {
    /// A transaction whose id the registry holds with `hash`: a duplicate when the content
    /// is the same, else a conflict kept as a dead letter.
    fn known_id(&mut self, events: &[Event], index: usize, hash: &[u8]) {
        let event = &events[index];
        if hash == &event.content_hash.0[..] {
            self.outcome.duplicates += 1;
        } else {
            self.outcome.conflicts.push(event.key.clone());
            self.dead.push((
                index,
                ingest::conflict_reason(event, "transaction id reused with other content"),
            ));
        }
    }
}

/// The registered content hashes of `ids`.
async fn registered(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    ids: &[&str],
) -> Result<HashMap<String, Vec<u8>>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(tx
        .query(
            "SELECT transaction_id, content_hash FROM transaction_ids WHERE tenant_id = $1 AND transaction_id = ANY($2)",
            &[&tenant, &ids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The hash `stored` holds for the id of `event`, when it is a transaction whose id is there.
fn registered_hash<'a>(stored: &'a HashMap<String, Vec<u8>>, event: &Event) -> Option<&'a [u8]> {
    match &event.body {
        EventBody::Transaction(t) => stored.get(t.transaction_id.as_str()).map(Vec::as_slice),
        _ => None,
    }
}

impl PgStore {
    #[tracing::instrument(name = "commit_events", level = "info", skip_all, fields(
        tenant = %stream.tenant, store = %stream.store, events = events.len(), inserted = tracing::field::Empty
    ))]
    pub(super) async fn commit_inner(
        &self,
        stream: &StreamId,
        events: &[Event],
        new_head: StreamHead,
        mut gate: Option<CommitGate>,
        ahead: Option<&GateOpener>,
    ) -> Result<(CommitOutcome, Option<Change>), StoreError> {
        let tz = self
            .zone(stream.tenant.as_str(), stream.store.as_str())
            .await?;
        if let (Some(lo), Some(hi)) = (
            events.iter().map(|e| body_time(&e.body)).min(),
            events.iter().map(|e| body_time(&e.body)).max(),
        ) {
            self.ensure_partitions(lo, hi).await?;
        }
        // One connection for the whole commit, taken only once the predecessor holds its
        // own (see `CommitGate`); the run behind this one may take one from then on.
        if let Some(gate) = gate.as_mut()
            && !gate.wait_started().await
        {
            return Err(StoreError::PredecessorFailed);
        }
        let mut client = self.client().await?;
        if let Some(ahead) = ahead {
            ahead.started();
        }
        let now = now_ms();
        let started = std::time::Instant::now();
        let columns = RunColumns::new(events);
        let committed = match self
            .commit_optimistic(
                &mut client,
                stream,
                events,
                &columns,
                new_head,
                &tz,
                now,
                gate.as_mut(),
            )
            .await?
        {
            Some(committed) => committed,
            None => {
                // The careful path decides from what is stored: behind a gate, only once
                // the predecessor's rows are there.
                if let Some(gate) = gate.as_mut()
                    && !gate.wait().await
                {
                    return Err(StoreError::PredecessorFailed);
                }
                self.commit_careful(&mut client, stream, events, &columns, new_head, &tz, now)
                    .await?
            }
        };
        let (outcome, change, lines) = committed;
        tracing::Span::current().record("inserted", outcome.inserted);
        crate::metrics::global().record_commit(
            started.elapsed().as_secs_f64(),
            outcome.inserted,
            lines,
            outcome.duplicates,
            outcome.conflicts.len() as u64,
        );
        Ok((outcome, change))
    }

    /// Commits the run as if every event were new; `None` (and nothing committed) when the
    /// key or transaction-id inserts show that some were not. Behind a gate, the rows only
    /// this run has are sent at once, and the shared ones after the predecessor committed.
    #[allow(clippy::too_many_arguments)]
    async fn commit_optimistic(
        &self,
        client: &mut deadpool_postgres::Object,
        stream: &StreamId,
        events: &[Event],
        columns: &RunColumns,
        new_head: StreamHead,
        tz: &TimeZone,
        now: UnixMillis,
        gate: Option<&mut CommitGate>,
    ) -> Result<Option<(CommitOutcome, Option<Change>, u64)>, StoreError> {
        let screened = ingest::screen(events, stream, |_| true);
        let mut decision = Decision {
            apply: screened.candidates,
            dead: screened.dead,
            ..Decision::default()
        };
        decision.outcome.inserted = screened.inserted;
        decision.outcome.duplicates = screened.duplicates;
        decision.outcome.conflicts = screened
            .conflicts
            .iter()
            .map(|&i| events[i].key.clone())
            .collect();
        // Rows are planned first: a transaction re-validation refuses is a dead letter and
        // never takes its id in the registry.
        let plan = plan_rows(events, &mut decision, tz, now);
        let (ids, hashes) = txn_ids(events, &plan.transactions);
        let expected_ids = ids.len() as u64;
        // A refused transaction whose id is registered is a duplicate or a conflict (the
        // registry decides before re-validation): that is for the careful path.
        let refused_ids: Vec<&str> = plan
            .rejected
            .iter()
            .filter_map(|r| match &events[r.index].body {
                EventBody::Transaction(t) => Some(t.transaction_id.as_str()),
                _ => None,
            })
            .collect();
        let mut leading = vec![columns.keys_statement(stream, events, INSERT_KEYS)];
        if !ids.is_empty() {
            leading.push(
                Statement::new(INSERT_TXN_IDS)
                    .bind(stream.tenant.as_str())
                    .bind(ids)
                    .bind(hashes),
            );
        }
        let refused_check = !refused_ids.is_empty();
        if refused_check {
            leading.push(
                Statement::new(
                    "SELECT 1 FROM transaction_ids WHERE tenant_id = $1 AND transaction_id = ANY($2)",
                )
                .bind(stream.tenant.as_str())
                .bind(refused_ids),
            );
        }
        let lead = leading.len();
        let writes = self.writes(
            stream,
            events,
            columns,
            &decision,
            &plan,
            new_head,
            now,
            leading,
            gate.as_ref().map(|g| g.after),
        )?;
        let split = if gate.is_some() {
            writes.shared
        } else {
            writes.statements.len()
        };
        let (own, shared) = writes.statements.split_at(split);
        let tx = client.transaction().await?;
        let mut results = pipeline(&tx, own).await?;
        results.remove(0)?;
        let rest = results.split_off(lead);
        let mut counts = Vec::with_capacity(lead);
        for result in results {
            counts.push(result?);
        }
        let ids_ok = expected_ids == 0 || counts.get(1) == Some(&expected_ids);
        let refused_unknown = !refused_check || counts.last() == Some(&0);
        let all_new = counts.first() == Some(&(events.len() as u64)) && ids_ok && refused_unknown;
        if !all_new {
            tx.rollback().await?;
            return Ok(None);
        }
        first_error(rest)?;
        if let Some(gate) = gate {
            if !gate.wait().await {
                tx.rollback().await?;
                return Err(StoreError::PredecessorFailed);
            }
            let mut results = pipeline(&tx, shared).await?;
            // The head moves only from where the predecessor left it.
            let head = results.remove(writes.head - split)?;
            first_error(results)?;
            if head != 1 {
                tx.rollback().await?;
                return Err(StoreError::Invalid(format!(
                    "stream head of device {} is not at seq {}, where the run before this one ended",
                    stream.device, gate.after.seq.0
                )));
            }
        }
        tx.commit().await?;
        let (change, lines) = (writes.change, writes.lines);
        Ok(Some((decision.outcome, change, lines)))
    }

    /// Commits the run deciding event by event which are new, duplicates or conflicts.
    #[allow(clippy::too_many_arguments)]
    async fn commit_careful(
        &self,
        client: &mut deadpool_postgres::Object,
        stream: &StreamId,
        events: &[Event],
        columns: &RunColumns,
        new_head: StreamHead,
        tz: &TimeZone,
        now: UnixMillis,
    ) -> Result<(CommitOutcome, Option<Change>, u64), StoreError> {
        let tenant = stream.tenant.as_str();
        let device = stream.device.as_str();
        let epoch = stream.epoch.0 as i64;
        let class = stream.class as i16;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant)).await?;

        // 1. Event identity: the keys that go in are the new events.
        let keys = columns.keys_statement(stream, events, &format!("{INSERT_KEYS} RETURNING seq"));
        let key_params: Vec<&(dyn ToSql + Sync)> = keys
            .params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let inserted_rows = tx.query(&keys.sql, &key_params).await?;
        let new_seqs: HashSet<i64> = inserted_rows.iter().map(|r| r.get(0)).collect();
        let mut decision = Decision::default();
        if new_seqs.len() < events.len() {
            // A duplicate has the same content and the same link: the chain hash covers
            // `prev`, so a fork that repeats a key and its content is still a conflict.
            let contents: Vec<&[u8]> = events.iter().map(|e| &e.content_hash.0[..]).collect();
            let chains: Vec<&[u8]> = columns.chains.iter().map(|h| &h[..]).collect();
            let rows = tx
                .query(
                    "SELECT s.seq, s.c = k.content_hash AND s.h = k.chain_hash \
                     FROM unnest($5::bigint[], $6::bytea[], $7::bytea[]) AS s(seq, c, h) JOIN event_keys k \
                     ON k.tenant_id = $1 AND k.device_id = $2 AND k.epoch = $3 AND k.class = $4 AND k.seq = s.seq",
                    &[&tenant, &device, &epoch, &class, &columns.seqs, &contents, &chains],
                )
                .await?;
            let same: HashMap<i64, bool> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            for (index, event) in events.iter().enumerate() {
                let seq = columns.seqs[index];
                if new_seqs.contains(&seq) {
                    continue;
                }
                match same.get(&seq) {
                    Some(false) => {
                        decision.outcome.conflicts.push(event.key.clone());
                        decision.dead.push((
                            index,
                            ingest::conflict_reason(event, "key already stored with other content"),
                        ));
                    }
                    _ => decision.outcome.duplicates += 1,
                }
            }
        }

        // 2. The transaction-id registry, then re-validation, as on SQLite: a registered id
        // makes a duplicate or a conflict; only transactions re-validation accepts register
        // theirs, so one it refuses, sent again corrected, is new.
        let screened = ingest::screen(events, stream, |e| new_seqs.contains(&(e.key.seq.0 as i64)));
        decision.dead.extend(screened.dead);
        decision.outcome.inserted += screened.inserted;
        decision.outcome.duplicates += screened.duplicates;
        decision
            .outcome
            .conflicts
            .extend(screened.conflicts.iter().map(|&i| events[i].key.clone()));
        let (ids, _) = txn_ids(events, &screened.candidates);
        let stored = registered(&tx, tenant, &ids).await?;
        let mut fresh = Vec::new();
        for index in screened.candidates {
            match registered_hash(&stored, &events[index]) {
                Some(hash) => decision.known_id(events, index, hash),
                None => fresh.push(index),
            }
        }
        let plan = Plan::new(events, &fresh, tz, now);
        let (ids, hashes) = txn_ids(events, &plan.transactions);
        let mut checked = Some(plan);
        let mut lost = HashMap::new();
        if !ids.is_empty() {
            let rows = tx
                .query(
                    &format!("{INSERT_TXN_IDS} RETURNING transaction_id"),
                    &[&tenant, &ids, &hashes],
                )
                .await?;
            let went_in: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
            let missing: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| !went_in.contains(*id))
                .collect();
            if !missing.is_empty() {
                // Registered meanwhile by another commit: a duplicate or a conflict after all.
                lost = registered(&tx, tenant, &missing).await?;
                // The plan covered those too: plan again without them.
                checked = None;
            }
        }
        for index in fresh {
            match registered_hash(&lost, &events[index]) {
                Some(hash) => decision.known_id(events, index, hash),
                None => decision.apply.push(index),
            }
        }

        // 3. The rows of the events that are new.
        let plan = match checked {
            Some(plan) => account(&mut decision, plan),
            None => plan_rows(events, &mut decision, tz, now),
        };
        let writes = self.writes(
            stream,
            events,
            columns,
            &decision,
            &plan,
            new_head,
            now,
            Vec::new(),
            None,
        )?;
        first_error(pipeline(&tx, &writes.statements).await?)?;
        tx.commit().await?;
        let (change, lines) = (writes.change, writes.lines);
        Ok((decision.outcome, change, lines))
    }

    /// Plans the rows of `decision.apply` as the statements of one pipeline: the tenant
    /// setting, then `leading`, the event tables and dead letters — rows only this run
    /// writes — then what runs of the stream share: alerts, the rollups (their rows are the
    /// contended ones, locked in key order for as short a time as possible), the stream head
    /// (moved only from `after`, when given) and the change notification.
    #[allow(clippy::too_many_arguments)]
    fn writes<'a>(
        &self,
        stream: &'a StreamId,
        events: &'a [Event],
        columns: &'a RunColumns,
        decision: &Decision,
        plan: &'a Plan,
        new_head: StreamHead,
        now: UnixMillis,
        leading: Vec<Statement<'a>>,
        after: Option<StreamHead>,
    ) -> Result<Writes<'a>, StoreError> {
        let tenant = stream.tenant.as_str();
        let store = stream.store.as_str();
        let device = stream.device.as_str();
        let epoch = stream.epoch.0 as i64;
        let class = stream.class as i16;
        // The tenant setting (`SET LOCAL`, as a statement that takes a parameter) goes
        // first, ahead of the leading statements: every statement of the pipeline runs
        // under row-level security for this tenant.
        let mut statements =
            vec![Statement::new("SELECT set_config('storesync.tenant_id', $1, true)").bind(tenant)];
        statements.extend(leading);

        if !plan.transactions.is_empty() {
            let t: Vec<_> = plan
                .transactions
                .iter()
                .filter_map(|&i| match &events[i].body {
                    EventBody::Transaction(t) => Some((i, t)),
                    _ => None,
                })
                .collect();
            statements.push(
                Statement::new(
                    "INSERT INTO transactions (tenant_id, at_ms, device_id, epoch, seq, store_id, transaction_id, kind, \
                       total_e4, payment_method, register_id, event) \
                     SELECT $1, a, $2, $3, s, $4, t, k, tot, p, r, e \
                     FROM unnest($5::bigint[], $6::bigint[], $7::text[], $8::smallint[], $9::bigint[], $10::text[], \
                       $11::text[], $12::bytea[]) AS u(a, s, t, k, tot, p, r, e)",
                )
                .bind(tenant)
                .bind(device)
                .bind(epoch)
                .bind(store)
                .bind(t.iter().map(|(_, t)| t.timestamp.unix_ms()).collect::<Vec<i64>>())
                .bind(t.iter().map(|&(i, _)| columns.seqs[i]).collect::<Vec<i64>>())
                .bind(t.iter().map(|(_, t)| t.transaction_id.as_str()).collect::<Vec<&str>>())
                .bind(t.iter().map(|(_, t)| ingest::txn_kind_code(t.kind)).collect::<Vec<i16>>())
                .bind(t.iter().map(|(_, t)| t.total_amount.e4()).collect::<Vec<i64>>())
                .bind(t.iter().map(|(_, t)| t.payment_method.as_str()).collect::<Vec<&str>>())
                .bind(
                    t.iter()
                        .map(|(_, t)| t.register_id.as_ref().map(|r| r.as_str()))
                        .collect::<Vec<Option<&str>>>(),
                )
                .bind(t.iter().map(|&(i, _)| &columns.bytes[i][..]).collect::<Vec<&[u8]>>()),
            );
        }
        if !plan.lines.is_empty() {
            // Only lines of events registered as new (the key check is what makes a replay
            // a no-op). COPY cannot target a table under row-level security, so the lines go
            // in as binary arrays.
            let l = &plan.lines;
            statements.push(
                Statement::new(
                    "INSERT INTO line_items (tenant_id, at_ms, device_id, epoch, seq, line_no, store_id, transaction_id, sku, \
                       quantity, price_e4, kind) \
                     SELECT $1, a, $2, $3, s, n, $4, t, k, q, p, kd \
                     FROM unnest($5::bigint[], $6::smallint[], $7::bigint[], $8::text[], $9::text[], $10::integer[], \
                       $11::bigint[], $12::smallint[]) AS u(s, n, a, t, k, q, p, kd)",
                )
                .bind(tenant)
                .bind(device)
                .bind(epoch)
                .bind(store)
                .bind(l.iter().map(|r| r.seq).collect::<Vec<i64>>())
                .bind(l.iter().map(|r| r.line_no).collect::<Vec<i16>>())
                .bind(l.iter().map(|r| r.at_ms).collect::<Vec<i64>>())
                .bind(l.iter().map(|r| r.transaction_id.as_str()).collect::<Vec<&str>>())
                .bind(l.iter().map(|r| r.sku.as_str()).collect::<Vec<&str>>())
                .bind(l.iter().map(|r| r.quantity).collect::<Vec<i32>>())
                .bind(l.iter().map(|r| r.price_e4).collect::<Vec<i64>>())
                .bind(l.iter().map(|r| r.kind).collect::<Vec<i16>>()),
            );
        }
        if !plan.others.is_empty() {
            let o = &plan.others;
            statements.push(
                Statement::new(
                    "INSERT INTO other_events (tenant_id, at_ms, device_id, epoch, class, seq, store_id, kind, event) \
                     SELECT $1, a, $2, $3, $4, s, $5, k, e \
                     FROM unnest($6::bigint[], $7::bigint[], $8::smallint[], $9::bytea[]) AS u(a, s, k, e)",
                )
                .bind(tenant)
                .bind(device)
                .bind(epoch)
                .bind(class)
                .bind(store)
                .bind(o.iter().map(|&i| body_time(&events[i].body)).collect::<Vec<i64>>())
                .bind(o.iter().map(|&i| columns.seqs[i]).collect::<Vec<i64>>())
                .bind(o.iter().map(|&i| body_kind(&events[i].body)).collect::<Vec<i16>>())
                .bind(o.iter().map(|&i| &columns.bytes[i][..]).collect::<Vec<&[u8]>>()),
            );
        }
        if !plan.movements.is_empty() {
            let m = &plan.movements;
            statements.push(
                Statement::new(
                    "INSERT INTO stock_movements (tenant_id, at_ms, device_id, epoch, class, seq, store_id, sku, source_id, \
                       is_count, quantity) \
                     SELECT $1, a, $2, $3, c, s, $4, k, src, ic, q \
                     FROM unnest($5::bigint[], $6::smallint[], $7::bigint[], $8::text[], $9::text[], $10::bool[], \
                       $11::bigint[]) AS u(a, c, s, k, src, ic, q) ON CONFLICT DO NOTHING",
                )
                .bind(tenant)
                .bind(device)
                .bind(epoch)
                .bind(store)
                .bind(m.iter().map(|r| r.at_ms).collect::<Vec<i64>>())
                .bind(m.iter().map(|r| r.class).collect::<Vec<i16>>())
                .bind(m.iter().map(|r| r.seq).collect::<Vec<i64>>())
                .bind(m.iter().map(|r| r.sku.clone()).collect::<Vec<String>>())
                .bind(m.iter().map(|r| r.source_id.clone()).collect::<Vec<String>>())
                .bind(m.iter().map(|r| r.is_count).collect::<Vec<bool>>())
                .bind(m.iter().map(|r| r.quantity).collect::<Vec<i64>>()),
            );
        }
        for (index, reason) in &decision.dead {
            let event = &events[*index];
            statements.push(
                Statement::new(
                    "INSERT INTO dead_letters (tenant_id, store_id, event_key, reason, raw, received_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(tenant)
                .bind(store)
                .bind(key_text(&event.key))
                .bind(reason.clone())
                .bind(&columns.bytes[*index][..])
                .bind(now),
            );
        }
        // What other runs of the stream may write too.
        let shared = statements.len();
        let mut changed_alerts = Vec::new();
        for &index in &plan.alerts {
            if let EventBody::Alert(alert) = &events[index].body {
                statements.push(alert_statement(tenant, alert.clone(), now));
                changed_alerts.push(alert.alert_id.as_str().to_owned());
            }
        }
        for key in &decision.outcome.conflicts {
            let alert_id = format!("hub-conflict-{}-{}-{}-{}", device, epoch, class, key.seq.0);
            let alert = Alert {
                alert_id: AlertId::new(alert_id.chars().take(64).collect::<String>())
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
                kind: AlertKind::ConflictingDuplicate,
                severity: Severity::Warning,
                store_id: stream.store.clone(),
                subject: key_text(key),
                raised_at: EventTime::from_unix_ms(now, 0),
                state: AlertState::Open,
                changed_by: None,
                message:
                    "an event arrived again with different content; the stored version was kept"
                        .into(),
                facts: vec![("seq".into(), key.seq.0 as i64)],
            };
            changed_alerts.push(alert.alert_id.as_str().to_owned());
            statements.push(alert_statement(tenant, alert, now));
        }
        if let Some(rollups) = rollups_statement(tenant, &plan.rollups) {
            statements.push(rollups);
        }
        let last_event_ms = events.iter().map(|e| body_time(&e.body)).max();
        let head = statements.len();
        let head_statement = match after {
            None => Statement::new(
                "INSERT INTO stream_heads (tenant_id, device_id, epoch, class, store_id, seq, hash, last_event_ms, last_commit_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (tenant_id, device_id, epoch, class) DO UPDATE SET \
                   seq = GREATEST(stream_heads.seq, excluded.seq), \
                   hash = CASE WHEN excluded.seq >= stream_heads.seq THEN excluded.hash ELSE stream_heads.hash END, \
                   last_event_ms = GREATEST(stream_heads.last_event_ms, excluded.last_event_ms), \
                   last_commit_ms = excluded.last_commit_ms",
            )
            .bind(tenant)
            .bind(device)
            .bind(epoch)
            .bind(class)
            .bind(store),
            // Behind a gate the row exists (the predecessor committed it) and must have
            // reached `after`: one row updated, or the commit is refused.
            Some(_) => Statement::new(
                "UPDATE stream_heads SET seq = GREATEST(seq, $5), hash = CASE WHEN $5 >= seq THEN $6 ELSE hash END, \
                   last_event_ms = GREATEST(last_event_ms, $7), last_commit_ms = $8 \
                 WHERE tenant_id = $1 AND device_id = $2 AND epoch = $3 AND class = $4 AND seq >= $9",
            )
            .bind(tenant)
            .bind(device)
            .bind(epoch)
            .bind(class),
        }
        .bind(new_head.seq.0 as i64)
        .bind(new_head.hash.0.to_vec())
        .bind(last_event_ms)
        .bind(now);
        statements.push(match after {
            Some(after) => head_statement.bind(after.seq.0 as i64),
            None => head_statement,
        });
        let change =
            (!plan.ticks.is_empty() || !changed_alerts.is_empty() || !plan.movements.is_empty())
                .then(|| Change {
                    tenant: tenant.to_owned(),
                    sales: plan.ticks.clone(),
                    alerts: changed_alerts,
                    stores: vec![store.to_owned()],
                });
        if let Some(change) = &change {
            statements.push(
                Statement::new("SELECT pg_notify($1, $2)")
                    .bind(CHANGES_CHANNEL)
                    .bind(super::notify_payload(change)),
            );
        }
        Ok(Writes {
            statements,
            shared,
            head,
            change,
            lines: plan.lines.len() as u64,
        })
    }
}

/// The statements of a commit's pipeline, and what the commit reports.
struct Writes<'a> {
    statements: Vec<Statement<'a>>,
    /// The first statement that writes rows other runs of the stream may write too.
    shared: usize,
    /// The stream-head statement.
    head: usize,
    change: Option<Change>,
    /// Line items written.
    lines: u64,
}

/// Counts the events of `decision.apply` as inserted and plans their rows; what planning
/// rejects joins the dead letters.
fn plan_rows(events: &[Event], decision: &mut Decision, tz: &TimeZone, now: UnixMillis) -> Plan {
    let plan = Plan::new(events, &decision.apply, tz, now);
    account(decision, plan)
}

/// Counts the events of `decision.apply`, which `plan` was made of, as inserted; what
/// planning rejected joins the dead letters.
fn account(decision: &mut Decision, plan: Plan) -> Plan {
    decision.outcome.inserted += decision.apply.len() as u64;
    for r in &plan.rejected {
        decision.dead.push((r.index, r.reason.clone()));
    }
    plan
}

/// The upsert of an alert: its state only moves forward.
fn alert_statement<'a>(tenant: &'a str, alert: Alert, now: i64) -> Statement<'a> {
    let facts = serde_json::to_value(&alert.facts).unwrap_or(serde_json::Value::Null);
    Statement::new(
        "INSERT INTO alerts (tenant_id, alert_id, store_id, kind, severity, subject, raised_ms, raised_offset_min, state, \
           changed_by, message, facts, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (tenant_id, alert_id) DO UPDATE SET \
           state = excluded.state, changed_by = excluded.changed_by, updated_ms = excluded.updated_ms \
         WHERE alerts.state < excluded.state",
    )
    .bind(tenant)
    .bind(alert.alert_id.as_str().to_owned())
    .bind(alert.store_id.as_str().to_owned())
    .bind(alert.kind.as_str())
    .bind(alert.severity.as_str())
    .bind(alert.subject)
    .bind(alert.raised_at.unix_ms())
    .bind(alert.raised_at.offset_minutes())
    .bind(alert_state_rank(alert.state))
    .bind(alert.changed_by)
    .bind(alert.message)
    .bind(facts)
    .bind(now)
}

/// The rollup deltas of a run, added to the stored rows.
fn rollups_statement<'a>(
    tenant: &'a str,
    rollups: &'a std::collections::BTreeMap<
        ingest::RollupKeyRow,
        storesync_protocol::rollup::SalesFigures,
    >,
) -> Option<Statement<'a>> {
    if rollups.is_empty() {
        return None;
    }
    // The primary key order is (granularity, dim, store, value, bucket): sort by it so that
    // concurrent ingests lock shared rows in the same order.
    let mut rows: Vec<_> = rollups.iter().collect();
    rows.sort_by(|(a, _), (b, _)| (a.0, a.3, &a.2, &a.4, a.1).cmp(&(b.0, b.3, &b.2, &b.4, b.1)));
    Some(
        Statement::new(
            "INSERT INTO sales_rollups AS r (tenant_id, granularity, bucket_ms, store_id, dim, dim_value, revenue_e4, units, \
               transactions, refunds, refund_amount_e4, voids) \
             SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::text[], $5::smallint[], $6::text[], $7::bigint[], \
               $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[]) \
             ON CONFLICT (tenant_id, granularity, dim, store_id, dim_value, bucket_ms) DO UPDATE SET \
               revenue_e4 = r.revenue_e4 + excluded.revenue_e4, units = r.units + excluded.units, \
               transactions = r.transactions + excluded.transactions, refunds = r.refunds + excluded.refunds, \
               refund_amount_e4 = r.refund_amount_e4 + excluded.refund_amount_e4, voids = r.voids + excluded.voids",
        )
        .bind(tenant)
        .bind(rows.iter().map(|(k, _)| k.0).collect::<Vec<i16>>())
        .bind(rows.iter().map(|(k, _)| k.1).collect::<Vec<i64>>())
        .bind(rows.iter().map(|(k, _)| k.2.as_str()).collect::<Vec<&str>>())
        .bind(rows.iter().map(|(k, _)| k.3).collect::<Vec<i16>>())
        .bind(rows.iter().map(|(k, _)| k.4.as_str()).collect::<Vec<&str>>())
        .bind(rows.iter().map(|(_, f)| f.revenue_e4).collect::<Vec<i64>>())
        .bind(rows.iter().map(|(_, f)| f.units).collect::<Vec<i64>>())
        .bind(rows.iter().map(|(_, f)| f.transactions).collect::<Vec<i64>>())
        .bind(rows.iter().map(|(_, f)| f.refunds).collect::<Vec<i64>>())
        .bind(rows.iter().map(|(_, f)| f.refund_amount_e4).collect::<Vec<i64>>())
        .bind(rows.iter().map(|(_, f)| f.voids).collect::<Vec<i64>>()),
    )
}
