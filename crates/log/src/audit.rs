//! Verifying the log: every customer's hash chain, gaps in versions, and signed checkpoints
//! of all chain heads.
//!
//! A chain proves that nothing inside it was altered, removed or reordered. It cannot prove
//! that a whole stream was not rebuilt from scratch by someone with admin rights, with new
//! consistent hashes; a signed checkpoint of every chain head (HMAC-SHA-256 with a key the
//! stream's admins do not hold) can.

use std::collections::{BTreeMap, HashMap};

use crm_domain::CustomerId;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::envelope::GENESIS_HASH;
use crate::error::LogError;
use crate::log::{EventLog, StoredEvent};

/// What kind of break was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The content does not match the event's own hash: it was altered.
    HashMismatch,
    /// `prev_hash` is not the previous event's hash: an event was removed, replaced or
    /// reordered.
    BrokenLink,
    /// The per-customer version skips or repeats.
    VersionGap,
    /// The message is not a valid envelope.
    Undecodable,
}

/// The first break found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Break {
    pub kind: BreakKind,
    pub customer_id: Option<CustomerId>,
    pub sequence: u64,
    pub version: Option<u64>,
    pub expected: String,
    pub found: String,
}

/// A signed checkpoint to compare against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedHeads {
    pub head_sequence: u64,
    pub customers: u64,
    pub heads_digest: String,
    pub signature: String,
}

/// A checkpoint whose digest differs from the log's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointMismatch {
    pub head_sequence: u64,
    pub signed_digest: String,
    pub log_digest: String,
    /// False when the stored checkpoint itself was forged (its signature is wrong).
    pub signature_valid: bool,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    pub ok: bool,
    pub events_checked: u64,
    pub customers: u64,
    pub head_sequence: u64,
    pub checkpoints_checked: u64,
    /// Whether the checkpoints' signatures were checked (a signing key was given). Without
    /// it, a forged checkpoint whose digest matches a rewritten log would pass.
    pub signatures_checked: bool,
    pub first_break: Option<Break>,
    pub checkpoint_mismatch: Option<CheckpointMismatch>,
    /// What this verification could not prove, though it passed: no signed checkpoint to
    /// compare with (a log rebuilt from scratch with consistent chains passes too), or
    /// signatures not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Folds events in log order and remembers the first break.
#[derive(Debug, Default)]
pub struct Verifier {
    heads: HashMap<CustomerId, (u64, String)>,
    checked: u64,
    last_sequence: u64,
    first_break: Option<Break>,
}

impl Verifier {
    /// Checks one event.
    pub fn check(&mut self, e: &StoredEvent) {
        self.checked += 1;
        self.last_sequence = e.sequence;
        let env = &e.envelope;
        let (prev_version, prev_hash) = self
            .heads
            .get(&env.customer_id)
            .cloned()
            .unwrap_or((0, GENESIS_HASH.to_owned()));
        let brk = |kind, expected: String, found: String| Break {
            kind,
            customer_id: Some(env.customer_id),
            sequence: e.sequence,
            version: Some(env.version),
            expected,
            found,
        };
        let computed = env.compute_hash();
        let problem = if computed != env.hash {
            Some(brk(BreakKind::HashMismatch, computed, env.hash.clone()))
        } else if env.version != prev_version + 1 {
            Some(brk(
                BreakKind::VersionGap,
                format!("version {}", prev_version + 1),
                format!("version {}", env.version),
            ))
        } else if env.prev_hash != prev_hash {
            Some(brk(BreakKind::BrokenLink, prev_hash, env.prev_hash.clone()))
        } else {
            None
        };
        if let Some(p) = problem
            && self.first_break.is_none()
        {
            self.first_break = Some(p);
        }
        self.heads
            .insert(env.customer_id, (env.version, env.hash.clone()));
    }

    /// Records an undecodable message.
    pub fn undecodable(&mut self, sequence: u64, reason: String) {
        self.checked += 1;
        self.last_sequence = sequence;
        if self.first_break.is_none() {
            self.first_break = Some(Break {
                kind: BreakKind::Undecodable,
                customer_id: None,
                sequence,
                version: None,
                expected: "an event envelope".into(),
                found: reason,
            });
        }
    }

    /// Digest of every chain head so far.
    pub fn heads_digest(&self) -> String {
        heads_digest(self.heads.iter().map(|(c, (v, h))| (*c, *v, h.as_str())))
    }

    /// Number of customers seen.
    pub fn customers(&self) -> u64 {
        self.heads.len() as u64
    }

    fn report(self, checkpoints_checked: u64, mismatch: Option<CheckpointMismatch>) -> Report {
        Report {
            ok: self.first_break.is_none() && mismatch.is_none(),
            events_checked: self.checked,
            customers: self.heads.len() as u64,
            head_sequence: self.last_sequence,
            checkpoints_checked,
            signatures_checked: false,
            first_break: self.first_break,
            checkpoint_mismatch: mismatch,
            warnings: Vec::new(),
        }
    }
}

/// SHA-256 over `customer:version:hash` lines sorted by customer.
pub fn heads_digest<'a>(heads: impl Iterator<Item = (CustomerId, u64, &'a str)>) -> String {
    let sorted: BTreeMap<CustomerId, (u64, &str)> = heads.map(|(c, v, h)| (c, (v, h))).collect();
    let mut hasher = Sha256::new();
    for (c, (v, h)) in sorted {
        hasher.update(format!("{c}:{v}:{h}\n").as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn signing_input(head_sequence: u64, customers: u64, digest: &str) -> String {
    format!("crm-chain-checkpoint:v1:{head_sequence}:{customers}:{digest}")
}

/// HMAC-SHA-256 signature of a checkpoint.
pub fn sign(key: &[u8], head_sequence: u64, customers: u64, digest: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(signing_input(head_sequence, customers, digest).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a checkpoint's signature is valid for `key`.
pub fn signature_valid(key: &[u8], c: &SignedHeads) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(signing_input(c.head_sequence, c.customers, &c.heads_digest).as_bytes());
    hex::decode(&c.signature)
        .map(|sig| mac.verify_slice(&sig).is_ok())
        .unwrap_or(false)
}

/// Verifies one customer's chain.
pub async fn verify_customer(log: &EventLog, id: &CustomerId) -> Result<Report, LogError> {
    let mut v = Verifier::default();
    for item in log.read_customer_raw(id, 0).await? {
        match item {
            Ok(e) => v.check(&e),
            Err(LogError::Decode { sequence, reason }) => v.undecodable(sequence, reason),
            Err(e) => return Err(e),
        }
    }
    Ok(v.report(0, None))
}

/// Verifies every chain in the log and compares the chain heads at each checkpoint's
/// position with its signed digest. `on_progress` is called with (events checked, head).
pub async fn verify_all(
    log: &EventLog,
    checkpoints: &[SignedHeads],
    key: Option<&[u8]>,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<Report, LogError> {
    let head = log.head().await?;
    let mut v = Verifier::default();
    // Every checkpoint counts, one past the log's head too: the log then lacks events it
    // held when the checkpoint was signed (a stream deleted and made again shorter, or
    // restored from an older backup). It is compared with the log at its head, where the
    // digests differ, and so it is reported.
    let mut pending: Vec<&SignedHeads> = checkpoints.iter().collect();
    pending.sort_by_key(|c| c.head_sequence);
    let mut pending = pending.into_iter().peekable();
    let mut checked_cps = 0;
    let mut mismatch = None;
    let compare = |v: &Verifier, c: &SignedHeads, mismatch: &mut Option<CheckpointMismatch>| {
        let digest = v.heads_digest();
        let sig_ok = key.is_none_or(|k| signature_valid(k, c));
        if (digest != c.heads_digest || !sig_ok) && mismatch.is_none() {
            *mismatch = Some(CheckpointMismatch {
                head_sequence: c.head_sequence,
                signed_digest: c.heads_digest.clone(),
                log_digest: digest,
                signature_valid: sig_ok,
            });
        }
    };
    if head > 0 {
        let stream = log.read(0, head);
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let sequence = match item {
                Ok(e) => {
                    v.check(&e);
                    e.sequence
                }
                Err(LogError::Decode { sequence, reason }) => {
                    v.undecodable(sequence, reason);
                    sequence
                }
                Err(e) => return Err(e),
            };
            while let Some(c) = pending.next_if(|c| c.head_sequence <= sequence) {
                compare(&v, c, &mut mismatch);
                checked_cps += 1;
            }
            if v.checked % 10_000 == 0 {
                on_progress(v.checked, head);
            }
            if sequence >= head {
                break;
            }
        }
    }
    for c in pending {
        compare(&v, c, &mut mismatch);
        checked_cps += 1;
    }
    on_progress(v.checked, head);
    let mut report = v.report(checked_cps, mismatch);
    report.signatures_checked = key.is_some() && checked_cps > 0;
    if report.events_checked > 0 && checked_cps == 0 {
        report.warnings.push(
            "no signed checkpoint was compared: every chain links, but a log rewritten from \
             scratch with consistent chains would pass too (is this the read store that holds \
             the checkpoints?)"
                .into(),
        );
    }
    if checked_cps > 0 && key.is_none() {
        report.warnings.push(
            "no signing key: the checkpoints' signatures were not checked, so a forged \
             checkpoint would pass (set CRM_AUDIT__SIGNING_KEY)"
                .into(),
        );
    }
    Ok(report)
}
