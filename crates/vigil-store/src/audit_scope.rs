//! The audit event of the control-plane call being served, so that the store
//! writes it in the same transaction as every change the call commits: a
//! change is never committed without its event, whatever kills the process
//! afterwards (a slow model load, SIGKILL, a lost connection).
//!
//! The transport's guard opens the scope around a call ([`audited`]) with the
//! event it would write; each write transaction of the store, before it
//! commits, appends a copy with outcome `ok` ([`pending`]) and, once
//! committed, counts it ([`committed`]). The guard then writes its own event
//! only for calls that committed nothing (reads, refusals, failures) or that
//! failed after committing. A write outside any scope (background work: syncs,
//! monitoring windows) writes no event.

use std::future::Future;
use std::sync::Mutex;
use vigil_core::security::{AuditEvent, NewAuditEvent};

struct Call {
    event: NewAuditEvent,
    committed: Mutex<Vec<AuditEvent>>,
}

tokio::task_local! {
    static CALL: Call;
}

/// Runs `call` with `event` as the audit event of its writes. Returns its
/// output and the events its write transactions committed, in order.
pub async fn audited<F: Future>(event: NewAuditEvent, call: F) -> (F::Output, Vec<AuditEvent>) {
    let scope = Call { event, committed: Mutex::new(Vec::new()) };
    CALL.scope(scope, async {
        let output = call.await;
        (output, CALL.with(|c| std::mem::take(&mut *c.committed.lock().unwrap_or_else(|p| p.into_inner()))))
    })
    .await
}

/// The event a write about to commit appends, if it runs inside a call.
pub(crate) fn pending() -> Option<NewAuditEvent> {
    let mut event = CALL.try_with(|c| NewAuditEvent { outcome: "ok".to_owned(), ..c.event.clone() }).ok()?;
    if event.time.is_empty() {
        event.time = crate::now();
    }
    Some(event)
}

/// A write that appended [`pending`]'s event (chained as `event`) has committed.
pub(crate) fn committed(event: AuditEvent) {
    let _ = CALL.try_with(|c| c.committed.lock().unwrap_or_else(|p| p.into_inner()).push(event));
}
