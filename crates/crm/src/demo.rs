//! `crm demo`: believable customer lifecycles over two years of business time, through the
//! normal command path, so a new user sees a populated system and benchmarks have data.
//!
//! Customer ids and idempotency keys derive from the seed, so running the demo twice with
//! the same seed writes nothing new.

use std::sync::Arc;

use anyhow::Context;
use crm_domain::{Command, CustomerId};
use crm_log::{Customers, Metadata, SubmitError, SubmitOptions};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use time::{Date, Duration, OffsetDateTime, Time};

/// The scenarios the generator cycles through.
pub const SCENARIOS: [&str; 7] = [
    "loyal_grower",
    "red_triple",
    "purchases_falling",
    "decision_maker_changed",
    "detractor_with_delays",
    "churned_and_won_back",
    "renewal_coming_due",
];

/// Options of the generator.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of customers.
    #[arg(long, default_value_t = 200)]
    pub customers: u32,
    /// Seed: the same seed generates the same customers (and writes nothing the second time).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Last day of the generated history (YYYY-MM-DD); yesterday by default.
    #[arg(long)]
    pub until: Option<String>,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// One step of a story: its business time, the step's name (its command type and how many
/// of that type the story made before it, e.g. `record_purchase:3`: the same for the
/// same command whatever `until` is) and the command.
pub type Step = (OffsetDateTime, String, Value);

/// One customer's story: its commands in business-time order.
pub fn story(index: u32, seed: u64, until: Date) -> (CustomerId, &'static str, Vec<Step>) {
    let mut rng =
        StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(u64::from(index)));
    let id = CustomerId::new(uuid::Builder::from_random_bytes(rng.random()).into_uuid());
    let scenario = SCENARIOS[index as usize % SCENARIOS.len()];
    let start = until - Duration::days(730) + Duration::days(rng.random_range(0..30));
    let mut cmds: Vec<(Date, Value)> = Vec::new();
    let day = |d: Date| d.to_string();
    let names = [
        "Huaxin",
        "Nordwind",
        "Acme",
        "Blue Harbor",
        "Kestrel",
        "Meridian",
        "Tianfu",
        "Orion",
    ];
    let segments = [
        "manufacturing",
        "retail",
        "logistics",
        "healthcare",
        "software",
    ];
    let region = ["north", "south", "east", "west"][index as usize % 4];
    let channel = ["referral", "event", "inbound", "partner"][index as usize % 4];
    cmds.push((
        start,
        json!({"type": "register_customer",
        "name": format!("{} {index}", names[index as usize % names.len()]),
        "segment": segments[index as usize % segments.len()],
        "region": region,
        "account_manager": format!("am{}", index % 12),
        "acquisition_channel": channel}),
    ));
    let sign_on = start + Duration::days(rng.random_range(10..40));
    let first_end = sign_on + Duration::days(365);
    let value = rng.random_range(20..400) * 10_000;
    cmds.push((
        sign_on,
        json!({"type": "sign_contract", "contract_id": "c1", "value_minor": value,
        "currency": "EUR", "starts_on": day(sign_on), "ends_on": day(first_end)}),
    ));
    // Everyday life in the first year: deliveries, purchases, activity, care.
    let mut order = 0;
    let mut purchase = |cmds: &mut Vec<(Date, Value)>, on: Date, amount: i64| {
        order += 1;
        cmds.push((
            on,
            json!({"type": "record_purchase", "order_id": format!("o{order}"),
            "amount_minor": amount, "currency": "EUR", "ordered_on": day(on)}),
        ));
    };
    for m in 1..11 {
        let d = sign_on + Duration::days(30 * m);
        cmds.push((
            d,
            json!({"type": "deliver_service", "contract_id": "c1", "service_id": format!("s{m}"),
            "promised_on": day(d), "delivered_on": day(d), "exceeded_expectations": m % 4 == 0}),
        ));
        cmds.push((
            d,
            json!({"type": "record_activity", "day": day(d), "logins": rng.random_range(5..60)}),
        ));
        purchase(
            &mut cmds,
            d + Duration::days(3),
            rng.random_range(50..150) * 1_000,
        );
        if m % 3 == 0 {
            cmds.push((
                d,
                json!({"type": "respond_to_request", "request_id": format!("r{m}"),
                "response_minutes": rng.random_range(10..110)}),
            ));
        }
    }
    cmds.push((
        sign_on + Duration::days(100),
        json!({"type": "record_care_touch", "kind": "holiday"}),
    ));
    cmds.push((
        sign_on + Duration::days(200),
        json!({"type": "deliver_value_add", "kind": "industry_insight"}),
    ));
    cmds.push((
        sign_on + Duration::days(300),
        json!({"type": "record_survey", "kind": "nps", "score": 9}),
    ));
    // Renewal at the end of the first term, except for the renewal-coming-due story.
    let second_end = first_end + Duration::days(365);
    let back = first_end + Duration::days(rng.random_range(60..150));
    let recent = until - Duration::days(120);
    match scenario {
        "renewal_coming_due" => {
            // A second contract signed recently that ends inside the next 90 days.
            let ends = until + Duration::days(rng.random_range(20..80));
            cmds.push((
                first_end - Duration::days(60),
                json!({"type": "renew_contract", "contract_id": "c1",
                "new_ends_on": day(second_end)}),
            ));
            cmds.push((recent, json!({"type": "sign_contract", "contract_id": "c2", "value_minor": 50_000,
                "currency": "EUR", "starts_on": day(recent), "ends_on": day(ends), "notice_days": 90})));
        }
        "churned_and_won_back" => {
            cmds.push((
                first_end,
                json!({"type": "terminate_contract", "contract_id": "c1", "reason": "budget cut"}),
            ));
            cmds.push((back, json!({"type": "sign_contract", "contract_id": "c2", "value_minor": value / 2,
                "currency": "EUR", "starts_on": day(back), "ends_on": day(back + Duration::days(365))})));
        }
        _ => {
            cmds.push((
                first_end - Duration::days(45),
                json!({"type": "renew_contract", "contract_id": "c1",
                "new_ends_on": day(second_end), "value_minor": value + 50_000}),
            ));
        }
    }
    if scenario != "red_triple" {
        // Ongoing usage in the second year, so only the red story goes quiet (and a churned
        // customer only after coming back).
        let mut d = if scenario == "churned_and_won_back" {
            back
        } else {
            first_end
        };
        while d < until - Duration::days(3) {
            cmds.push((d, json!({"type": "record_activity", "day": day(d), "logins": rng.random_range(3..30)})));
            d += Duration::days(20);
        }
    }
    match scenario {
        "loyal_grower" => {
            for m in 0..10 {
                let d = first_end + Duration::days(30 * m + 5);
                purchase(&mut cmds, d, 120_000 + 10_000 * m);
                cmds.push((
                    d,
                    json!({"type": "record_activity", "day": day(d), "logins": 40}),
                ));
            }
            cmds.push((
                first_end + Duration::days(60),
                json!({"type": "expand_contract", "contract_id": "c1",
                "kind": "upsell", "added_value_minor": 100_000}),
            ));
            cmds.push((
                first_end + Duration::days(90),
                json!({"type": "record_care_touch", "kind": "birthday"}),
            ));
        }
        "red_triple" => {
            for m in 0..3 {
                purchase(&mut cmds, recent - Duration::days(80 - 25 * m), 200_000);
            }
            purchase(&mut cmds, until - Duration::days(60), 40_000);
            cmds.push((
                until - Duration::days(40),
                json!({"type": "log_complaint", "complaint_id": "k1",
                "severity": "major", "topic": "invoice errors"}),
            ));
            cmds.push((
                until - Duration::days(1),
                json!({"type": "flag_inactivity", "days_inactive": 45,
                "last_activity_on": day(until - Duration::days(46))}),
            ));
        }
        "purchases_falling" => {
            // Four calendar months of falling purchase totals, ending in the current month.
            let this_month = until.replace_day(1).unwrap_or(until);
            for (k, amount) in [(3, 400_000), (2, 300_000), (1, 200_000), (0, 100_000)] {
                let mut d = this_month;
                for _ in 0..k {
                    d = (d - Duration::days(1)).replace_day(1).unwrap_or(d);
                }
                purchase(&mut cmds, d.min(until), amount);
            }
        }
        "decision_maker_changed" => {
            cmds.push((
                until - Duration::days(20),
                json!({"type": "change_key_contact", "role": "decision_maker",
                "previous_contact": "Ms. Chen", "new_contact": "Mr. Park"}),
            ));
        }
        "detractor_with_delays" => {
            cmds.push((until - Duration::days(50), json!({"type": "delay_service", "contract_id": "c1",
                "service_id": "late1", "promised_on": day(until - Duration::days(55)), "days_late": 5})));
            cmds.push((until - Duration::days(30), json!({"type": "delay_service", "contract_id": "c1",
                "service_id": "late2", "promised_on": day(until - Duration::days(38)), "days_late": 8})));
            cmds.push((
                until - Duration::days(10),
                json!({"type": "record_survey", "kind": "nps", "score": 2,
                "comment": "deliveries keep slipping"}),
            ));
        }
        _ => {}
    }
    // Steps are named in the order they were made, which does not depend on `until`:
    // sorted by date, a purchase on the first of a month and an activity 20 days after
    // another trade places from one `until` to the next, and a name that was a position
    // in the sorted list would then name another command.
    let mut made: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut steps: Vec<(Date, String, Value)> = cmds
        .into_iter()
        .map(|(d, v)| {
            let ty = v["type"].as_str().unwrap_or("command").to_owned();
            let n = made.entry(ty.clone()).or_default();
            let name = format!("{ty}:{n}");
            *n += 1;
            (d, name, v)
        })
        .collect();
    steps.retain(|(d, _, _)| *d <= until);
    steps.sort_by_key(|(d, _, _)| *d);
    let at = |d: Date| {
        d.with_time(Time::from_hms(10, 0, 0).unwrap_or(Time::MIDNIGHT))
            .assume_utc()
    };
    (
        id,
        scenario,
        steps
            .into_iter()
            .map(|(d, name, v)| (at(d), name, v))
            .collect(),
    )
}

/// Writes the demo data through `customers`. Returns (events written, commands replayed).
pub async fn run(customers: Arc<Customers>, args: &DemoArgs) -> anyhow::Result<(u64, u64)> {
    let until = match &args.until {
        Some(s) => Date::parse(s, &time::format_description::well_known::Iso8601::DATE)
            .with_context(|| format!("--until {s:?} is not YYYY-MM-DD"))?,
        None => OffsetDateTime::now_utc().date() - Duration::days(1),
    };
    let stories: Vec<_> = (0..args.customers)
        .map(|i| story(i, args.seed, until))
        .collect();
    let total: u64 = stories.iter().map(|(_, _, c)| c.len() as u64).sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} demo [{bar:40}] {pos}/{len} commands {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let seed = args.seed;
    let results = futures::stream::iter(stories.into_iter().enumerate())
        .map(|(i, (id, _scenario, cmds))| {
            let customers = customers.clone();
            let bar = bar.clone();
            async move {
                let (mut written, mut replayed) = (0u64, 0u64);
                let steps = cmds.len() as u64;
                for (at, step, body) in cmds {
                    let command: Command = serde_json::from_value(body)
                        .with_context(|| format!("demo customer {i} step {step} is invalid"))?;
                    let opts = SubmitOptions {
                        occurred_at: Some(at),
                        now: OffsetDateTime::now_utc(),
                        expected_version: None,
                        meta: Metadata {
                            actor: "demo".into(),
                            idempotency_key: Some(format!("demo:{seed}:{i}:{step}")),
                            ..Metadata::default()
                        },
                    };
                    match customers.submit(id, &command, &opts).await {
                        Ok(s) if s.replayed => replayed += 1,
                        Ok(_) => written += 1,
                        // Seeded before, on another day (the stories end yesterday, so
                        // their times move): the step is there already.
                        Err(SubmitError::IdempotencyKeyReused { original_type })
                            if original_type == command.event_type() =>
                        {
                            replayed += 1
                        }
                        // Registered under other keys (by a build that named steps by
                        // their position): the customer is there; leave it as it is.
                        Err(SubmitError::Rejected(
                            crm_domain::DomainError::CustomerAlreadyRegistered,
                        )) if written + replayed == 0 => {
                            bar.inc(steps);
                            return Ok((0, steps));
                        }
                        Err(SubmitError::Rejected(e)) => {
                            anyhow::bail!("demo customer {i} step {step} refused: {e}")
                        }
                        Err(e) => return Err(e.into()),
                    }
                    bar.inc(1);
                }
                Ok::<_, anyhow::Error>((written, replayed))
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    bar.finish_and_clear();
    let mut totals = (0, 0);
    for r in results {
        let (w, r) = r?;
        totals.0 += w;
        totals.1 += r;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's name stands for the same command whatever day the story ends on: the
    /// purchases of `purchases_falling` fall on the first of each month, and sorted by
    /// date they trade places with the other steps from one `until` to the next. The
    /// command is told by its type and the fields that name what it is about (order,
    /// contract, service, complaint, kind), not its dates.
    #[test]
    fn step_names_do_not_depend_on_the_last_day() {
        let base = time::macros::date!(2025 - 12 - 15);
        let what = |v: &Value| {
            [
                "type",
                "order_id",
                "contract_id",
                "service_id",
                "complaint_id",
                "kind",
                "role",
                "score",
            ]
            .map(|field| v[field].clone())
        };
        for index in 0..SCENARIOS.len() as u32 {
            let (_, _, first) = story(index, 1, base);
            let names = |steps: &[Step]| {
                steps
                    .iter()
                    .map(|(_, name, v)| (name.clone(), what(v)))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            assert_eq!(names(&first).len(), first.len(), "names are unique");
            for later in [1, 20, 36, 77] {
                let (_, scenario, steps) = story(index, 1, base + Duration::days(later));
                assert_eq!(
                    names(&steps),
                    names(&first),
                    "{scenario}, {later} days later"
                );
            }
        }
    }
}
