//! Commands as NATS requests on `crm.commands.<type>`, served by every gateway as one queue
//! group. The body is the HTTP body (`type` may be left out: the subject names it); the
//! customer is the `Crm-Customer-Id` header or a `customer_id` field; `Authorization`,
//! `Idempotency-Key`, `If-Match`, `X-Correlation-Id` and `X-Causation-Id` are headers as
//! over HTTP. The reply body is the HTTP body, and the `Crm-Status` header carries the HTTP
//! status code.

use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::commands::{self, CommandRequest};

/// Subject prefix of command requests.
pub const SUBJECT_PREFIX: &str = "crm.commands";
/// Queue group shared by all gateways.
pub const QUEUE_GROUP: &str = "crm-gateway";

/// Whether a request's reply subject may be answered. The gateway's connection may publish
/// to the event log, so a reply must never go there (the stream would store the reply as
/// an event of the customer the subject names, for ever), nor to the JetStream, key-value,
/// object-store or system APIs, nor back into the command subjects. Anyone who may send a
/// command request could otherwise name any of them.
pub fn reply_allowed(reply: &str) -> bool {
    const FORBIDDEN: [&str; 5] = ["$JS.", "$KV.", "$O.", "$SYS.", "$NRG."];
    let inside = |prefix: &str| {
        reply == prefix
            || reply
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    !inside(crm_log::subject::EVENTS_PREFIX)
        && !inside(SUBJECT_PREFIX)
        && !FORBIDDEN.iter().any(|p| reply.starts_with(p))
}

/// The first value of header `name`, its name matched case-insensitively as over HTTP
/// (async-nats compares header names exactly).
fn header<'h>(headers: Option<&'h HeaderMap>, name: &str) -> Option<&'h str> {
    let headers = headers?;
    if let Some(v) = headers.get(name) {
        return Some(v.as_str());
    }
    headers
        .iter()
        .find(|(n, _)| AsRef::<str>::as_ref(n).eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str())
}

/// Moves the subject's type and a body `customer_id` into place; returns the customer.
fn normalise(
    subject_type: &str,
    body: &[u8],
    header_customer: Option<&str>,
) -> Result<(String, Vec<u8>), ApiError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("body is not valid JSON: {e}"))
    })?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::bad_request(
            "invalid_command",
            "body must be a JSON object",
        ));
    };
    match obj.get("type") {
        None => {
            obj.insert("type".into(), Value::String(subject_type.to_owned()));
        }
        Some(Value::String(t)) if t == subject_type => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "type_mismatch",
                format!("body type does not match the subject's {subject_type:?}"),
            ));
        }
    }
    let body_customer = match obj.remove("customer_id") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_customer_id",
                "customer_id must be a UUID string",
            ));
        }
    };
    let customer = match (header_customer, body_customer) {
        (Some(h), Some(b)) if !same_customer(h, &b) => {
            return Err(ApiError::bad_request(
                "customer_id_mismatch",
                "the Crm-Customer-Id header and the body's customer_id name different customers",
            ));
        }
        (Some(h), _) => h.to_owned(),
        (None, Some(b)) => b,
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_customer_id",
                "send Crm-Customer-Id or a customer_id field",
            ));
        }
    };
    Ok((customer, serde_json::to_vec(&value).unwrap_or_default()))
}

/// Whether two customer ids name the same customer (in any UUID spelling; two strings
/// that are not UUIDs only when equal, and the command path refuses them anyway).
fn same_customer(a: &str, b: &str) -> bool {
    match (
        uuid::Uuid::parse_str(a.trim()),
        uuid::Uuid::parse_str(b.trim()),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

async fn answer(state: &AppState, msg: &async_nats::Message) -> (u16, Vec<u8>) {
    let subject_type = msg
        .subject
        .as_str()
        .strip_prefix(SUBJECT_PREFIX)
        .and_then(|s| s.strip_prefix('.'))
        .unwrap_or("");
    let headers = msg.headers.as_ref();
    let result = async {
        // Authenticate before looking at the body.
        let principal = state.auth.authorize_value(
            header(headers, "Authorization"),
            crate::auth::Role::Publisher,
        )?;
        if msg.payload.len() > crate::intake::MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: crate::intake::MAX_BODY_BYTES,
            });
        }
        let (customer, body) = normalise(
            subject_type,
            &msg.payload,
            header(headers, "Crm-Customer-Id"),
        )?;
        commands::handle_as(
            state,
            principal,
            CommandRequest {
                authorization: header(headers, "Authorization"),
                customer_id: &customer,
                idempotency_key: header(headers, "Idempotency-Key"),
                if_match: header(headers, "If-Match"),
                correlation_id: header(headers, "X-Correlation-Id"),
                causation_id: header(headers, "X-Causation-Id"),
                body: &body,
            },
        )
        .await
    }
    .await;
    match result {
        Ok(s) => (
            commands::status_of(&s).as_u16(),
            serde_json::to_vec(&s.receipt).unwrap_or_default(),
        ),
        Err(e) => {
            let (status, body) = e.into_status_and_body();
            (
                status.as_u16(),
                serde_json::to_vec(&body).unwrap_or_default(),
            )
        }
    }
}

/// Most command requests one gateway works on at once over NATS. A request beyond them is
/// answered at once with 503 `overloaded` and not taken: without a bound, a burst would
/// queue without limit behind the per-customer locks, and requests its senders had long
/// given up on (and perhaps retried) would still be appended minutes later.
pub const MAX_IN_FLIGHT: usize = 4_096;

/// Serves command requests until `shutdown`, each request on its own task, at most
/// [`MAX_IN_FLIGHT`] at once. On shutdown it stops taking requests, answers those the
/// server had already handed over, and waits (at most [`crate::app::SHUTDOWN_GRACE`]) for
/// the ones in flight, so no accepted command goes unanswered.
pub async fn serve(
    client: async_nats::Client,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), async_nats::Error> {
    serve_at_most(client, state, shutdown, MAX_IN_FLIGHT).await
}

/// [`serve`] with another bound on the requests in flight.
pub async fn serve_at_most(
    client: async_nats::Client,
    state: AppState,
    shutdown: CancellationToken,
    max_in_flight: usize,
) -> Result<(), async_nats::Error> {
    let max_in_flight = max_in_flight.max(1);
    let mut sub = client
        .queue_subscribe(format!("{SUBJECT_PREFIX}.*"), QUEUE_GROUP.to_owned())
        .await?;
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = sub.next() => match msg {
                Some(msg) if working(&mut in_flight) >= max_in_flight => {
                    refuse_overloaded(&client, msg, in_flight.len()).await;
                }
                Some(msg) => spawn_answer(&mut in_flight, &client, &state, msg),
                None => break,
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    let finish = async {
        // Drained, the subscription ends after the messages already on their way.
        if let Err(e) = sub.drain().await {
            tracing::warn!(error = %e, "draining the command subscription");
        }
        while let Some(msg) = sub.next().await {
            spawn_answer(&mut in_flight, &client, &state, msg);
        }
        while in_flight.join_next().await.is_some() {}
    };
    if tokio::time::timeout(crate::app::SHUTDOWN_GRACE, finish)
        .await
        .is_err()
    {
        tracing::warn!("command requests still in flight at shutdown were abandoned");
    }
    Ok(())
}

fn spawn_answer(
    in_flight: &mut JoinSet<()>,
    client: &async_nats::Client,
    state: &AppState,
    msg: async_nats::Message,
) {
    let Some(reply) = msg.reply.clone() else {
        tracing::warn!(subject = %msg.subject, "command without a reply subject ignored");
        return;
    };
    if !reply_allowed(&reply) {
        // Not even decided: an answer could not be delivered, and a command whose outcome
        // its sender cannot learn is better not taken.
        tracing::warn!(subject = %msg.subject, reply = %reply, "command with a reply subject inside the log or a server API ignored");
        return;
    }
    let state = state.clone();
    let client = client.clone();
    in_flight.spawn(async move {
        let (status, body) = answer(&state, &msg).await;
        send_reply(&client, reply, status, body).await;
    });
}

/// The requests still being worked on: finished tasks are reaped first (the set counts
/// them until they are).
fn working(in_flight: &mut JoinSet<()>) -> usize {
    while in_flight.try_join_next().is_some() {}
    in_flight.len()
}

/// Answers a request that was not taken: 503 `overloaded`.
async fn refuse_overloaded(
    client: &async_nats::Client,
    msg: async_nats::Message,
    in_flight: usize,
) {
    let Some(reply) = msg.reply else {
        return;
    };
    if !reply_allowed(&reply) {
        return;
    }
    let (status, body) = ApiError::Overloaded { in_flight }.public_body();
    send_reply(
        client,
        reply,
        status.as_u16(),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
    .await;
}

async fn send_reply(
    client: &async_nats::Client,
    reply: async_nats::Subject,
    status: u16,
    body: Vec<u8>,
) {
    let mut headers = HeaderMap::new();
    headers.insert("Crm-Status", status.to_string().as_str());
    headers.insert("Content-Type", "application/json");
    if let Err(e) = client
        .publish_with_headers(reply, headers, body.into())
        .await
    {
        tracing::error!(error = %e, "replying to a command request failed");
    }
}

#[cfg(test)]
mod tests {
    use super::reply_allowed;

    #[test]
    fn replies_never_go_into_the_log_or_a_server_api() {
        for ok in [
            "_INBOX.abc.1",
            "my.inbox.7",
            "crm.eventsx.1",
            "crm.commandsx",
            "JS.API",
        ] {
            assert!(reply_allowed(ok), "{ok}");
        }
        for refused in [
            "crm.events.07.0191e4c2-7a3b-7cde-8f00-123456789abc",
            "crm.events",
            "crm.commands.register_customer",
            "$JS.API.STREAM.DELETE.CRM_EVENTS",
            "$JS.ACK.CRM_EVENTS.x.1.1.1.1.0",
            "$KV.crm_leases_all.k",
            "$O.bucket.x",
            "$SYS.REQ.SERVER.PING",
            "$NRG.x",
        ] {
            assert!(!reply_allowed(refused), "{refused}");
        }
    }
}
