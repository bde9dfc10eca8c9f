//! Every rule tripped with values: the code, HTTP status and Retry-After it
//! gives, and the counting, expiry, reload and capacity behaviour the
//! module documentation promises.

use super::*;
use crate::config::DndConfig;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A day well after the epoch (2024-10-04); times are built from it.
const DAY: u64 = 20_000;

/// `h:m:s` UTC on day `DAY + d`.
fn at(d: u64, h: u64, m: u64, s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs((DAY + d) * 86_400 + h * 3600 + m * 60 + s)
}

/// Noon on `DAY`, away from midnight and from any test's DND window.
fn noon() -> SystemTime {
    at(0, 12, 0, 0)
}

fn notify<'a>(account: &'a str, number: &'a str) -> PolicyRequest<'a> {
    PolicyRequest {
        account,
        number,
        kind: CallKind::Notification,
        support_line: None,
        dnd_exempt: false,
    }
}

fn click<'a>(account: &'a str, number: &'a str, support: Option<&'a str>) -> PolicyRequest<'a> {
    PolicyRequest {
        kind: CallKind::ClickToCall,
        support_line: support,
        ..notify(account, number)
    }
}

/// A config with generous limits, so a test trips only the rule it sets.
fn open() -> PolicyConfig {
    PolicyConfig {
        account_day_calls_max: 1_000_000,
        number_day_calls_max: 1_000_000,
        cps_max: 100_000,
        number_burst_calls_max: 0,
        account_burst_calls_max: 0,
        ..PolicyConfig::default()
    }
}

/// Asserts `r` is refused with `code`, `status` and `retry_after_s`.
#[track_caller]
fn refused<T: std::fmt::Debug>(
    r: Result<T, PolicyError>,
    code: &str,
    status: u16,
    retry_after_s: Option<u32>,
) -> PolicyError {
    let e = r.expect_err(code);
    assert_eq!(
        (e.code(), e.http_status(), e.retry_after_s()),
        (code, status, retry_after_s),
        "{e:?}"
    );
    e
}

const N1: &str = "+79123456789";
const N2: &str = "+79123456780";

#[test]
fn valid_request_is_admitted_with_the_normalised_number() {
    let mut p = Policy::new(&PolicyConfig::default());
    let a = p
        .admit(
            noon(),
            &click("acme", "+7 (912) 345-67-89", Some("+7 495 000-00-00")),
        )
        .unwrap();
    assert_eq!(a.number().as_str(), N1);
    assert_eq!(a.support_line().map(E164::as_str), Some("+74950000000"));
    assert_eq!((a.account(), a.kind()), ("acme", CallKind::ClickToCall));
    assert_eq!(p.number_calls_today(noon(), N1), 1);
    assert_eq!(p.account_calls_today(noon(), "acme"), 1);
    // The support line is dialled but not counted.
    assert_eq!(p.number_calls_today(noon(), "+74950000000"), 0);
    assert_eq!(p.poll_event(), None);
}

#[test]
fn invalid_number_account_and_support_line_are_422() {
    let mut p = Policy::new(&PolicyConfig::default());
    for n in [
        "",
        "79123456789",
        "+0123456789",
        "+1234567",
        "+7912345678x",
        "+1234567890123456",
    ] {
        refused(
            p.check(noon(), &notify("acme", n)),
            "invalid_number",
            422,
            None,
        );
    }
    let long = "a".repeat(ACCOUNT_LEN_MAX + 1);
    for a in ["", "a b", "é", "a\n", long.as_str()] {
        refused(
            p.check(noon(), &notify(a, N1)),
            "invalid_account",
            422,
            None,
        );
    }
    p.check(noon(), &notify(&long[1..], N1)).unwrap();
    let bad_support = [
        click("acme", N1, None),
        click("acme", N1, Some("12345")),
        PolicyRequest {
            support_line: Some("+74950000000"),
            ..notify("acme", N1)
        },
    ];
    for r in &bad_support {
        refused(p.check(noon(), r), "invalid_support_line", 422, None);
    }
    assert_eq!(p.counters().refused("invalid_number"), 6);
    assert_eq!(p.counters().refused("invalid_account"), 5);
    assert_eq!(p.counters().refused("invalid_support_line"), 3);
}

#[test]
fn allowed_and_denied_prefixes_are_403() {
    let cfg = PolicyConfig {
        allowed_prefixes: vec!["+7".into(), "+49".into()],
        denied_prefixes: vec!["+7809".into(), "+49900".into()],
        ..open()
    };
    let mut p = Policy::new(&cfg);
    p.check(noon(), &notify("acme", N1)).unwrap();
    p.check(noon(), &notify("acme", "+4930123456")).unwrap();
    for n in ["+4412345678", "+78091234567", "+499001234567"] {
        refused(
            p.check(noon(), &notify("acme", n)),
            "destination_not_allowed",
            403,
            None,
        );
    }
    // The support line is held to the same rules.
    refused(
        p.check(noon(), &click("acme", N1, Some("+499001234567"))),
        "support_line_not_allowed",
        403,
        None,
    );
    // Empty allowed list: everything not denied.
    let mut p = Policy::new(&PolicyConfig {
        denied_prefixes: vec!["+881".into()],
        ..open()
    });
    p.check(noon(), &notify("acme", "+4412345678")).unwrap();
    refused(
        p.check(noon(), &notify("acme", "+88161234567")),
        "destination_not_allowed",
        403,
        None,
    );
}

#[test]
fn support_lines_allowlist() {
    let mut p = Policy::new(&PolicyConfig {
        support_lines: vec!["+74950000000".into()],
        ..open()
    });
    p.check(noon(), &click("acme", N1, Some("+7 495 000 00 00")))
        .unwrap();
    refused(
        p.check(noon(), &click("acme", N1, Some("+74950000001"))),
        "support_line_not_allowed",
        403,
        None,
    );
}

#[test]
fn blocklist_config_and_runtime_are_403() {
    let cfg = PolicyConfig {
        blocked_numbers: vec![N1.into()],
        blocked_prefixes: vec!["+7800".into()],
        runtime_blocks_max: 2,
        ..open()
    };
    let mut p = Policy::new(&cfg);
    refused(
        p.check(noon(), &notify("acme", N1)),
        "blocklisted",
        403,
        None,
    );
    refused(
        p.check(noon(), &notify("acme", "+78001234567")),
        "blocklisted",
        403,
        None,
    );
    refused(
        p.check(noon(), &click("acme", N2, Some(N1))),
        "support_line_not_allowed",
        403,
        None,
    );
    // unblock does not lift the configured list.
    assert!(!p.unblock_number(noon(), N1));
    refused(
        p.check(noon(), &notify("acme", N1)),
        "blocklisted",
        403,
        None,
    );

    // Runtime blocks: until a time, in any accepted form, liftable.
    let t0 = noon();
    p.block_number(t0, "+7 912 345-67-80", t0 + Duration::from_secs(600))
        .unwrap();
    refused(p.check(t0, &notify("acme", N2)), "blocklisted", 403, None);
    refused(
        p.check(t0 + Duration::from_secs(599), &notify("acme", N2)),
        "blocklisted",
        403,
        None,
    );
    p.check(t0 + Duration::from_secs(600), &notify("acme", N2))
        .unwrap();
    p.block_number(t0, N2, t0 + Duration::from_secs(600))
        .unwrap();
    assert!(p.unblock_number(t0, N2));
    assert!(!p.unblock_number(t0, N2));
    p.check(t0, &notify("acme", N2)).unwrap();
    refused(p.block_number(t0, "bad", t0), "invalid_number", 422, None);
    // A block in the past lifts nothing and adds nothing.
    p.block_number(t0, N2, t0).unwrap();
    p.check(t0, &notify("acme", N2)).unwrap();

    // The runtime list is bounded; expired blocks make room.
    let soon = t0 + Duration::from_secs(60);
    p.block_number(t0, "+79000000001", soon).unwrap();
    p.block_number(t0, "+79000000002", t0 + Duration::from_secs(120))
        .unwrap();
    refused(
        p.block_number(t0, "+79000000003", soon),
        "policy_table_full",
        503,
        Some(60),
    );
    // Re-blocking a held number is not a new entry.
    p.block_number(t0, "+79000000001", t0 + Duration::from_secs(90))
        .unwrap();
    p.block_number(
        t0 + Duration::from_secs(90),
        "+79000000003",
        soon + Duration::from_secs(600),
    )
    .unwrap();
}

#[test]
fn do_not_disturb_window_wraps_midnight_per_prefix_offset() {
    let cfg = PolicyConfig {
        dnd: vec![
            // Moscow, UTC+3: 21:00-09:00 local is 18:00-06:00 UTC.
            DndConfig {
                prefix: "+7".into(),
                utc_offset_minutes: 180,
                start: "21:00".into(),
                end: "09:00".into(),
            },
            // Almaty, UTC+5: 21:00-09:00 local is 16:00-04:00 UTC.
            DndConfig {
                prefix: "+77".into(),
                utc_offset_minutes: 300,
                start: "21:00".into(),
                end: "09:00".into(),
            },
        ],
        ..open()
    };
    let mut p = Policy::new(&cfg);
    let kz = "+77011234567";
    p.check(at(0, 17, 59, 59), &notify("acme", N1)).unwrap();
    refused(
        p.check(at(0, 17, 59, 59), &notify("acme", kz)),
        "do_not_disturb",
        429,
        Some(10 * 3600 + 1),
    );
    refused(
        p.check(at(0, 18, 0, 0), &notify("acme", N1)),
        "do_not_disturb",
        429,
        Some(12 * 3600),
    );
    // Past UTC midnight the window goes on.
    refused(
        p.check(at(1, 2, 30, 0), &notify("acme", N1)),
        "do_not_disturb",
        429,
        Some(3 * 3600 + 30 * 60),
    );
    p.check(at(1, 4, 0, 0), &notify("acme", kz)).unwrap();
    refused(
        p.check(at(1, 5, 59, 59), &notify("acme", N1)),
        "do_not_disturb",
        429,
        Some(1),
    );
    p.check(at(1, 6, 0, 0), &notify("acme", N1)).unwrap();
    // Countries without a window are called at any hour.
    p.check(at(0, 23, 0, 0), &notify("acme", "+4930123456"))
        .unwrap();
}

#[test]
fn dnd_exemption_only_for_configured_kinds() {
    let dnd = vec![DndConfig {
        prefix: "+".into(),
        utc_offset_minutes: 0,
        start: "22:00".into(),
        end: "07:00".into(),
    }];
    let night = at(0, 23, 0, 0);
    let exempt = PolicyRequest {
        dnd_exempt: true,
        ..notify("acme", N1)
    };
    let mut p = Policy::new(&PolicyConfig {
        dnd: dnd.clone(),
        ..open()
    });
    // Not configured: refused at any hour, so the portal learns at once.
    refused(p.check(night, &exempt), "dnd_exempt_not_allowed", 403, None);
    refused(
        p.check(noon(), &exempt),
        "dnd_exempt_not_allowed",
        403,
        None,
    );
    refused(
        p.check(night, &notify("acme", N1)),
        "do_not_disturb",
        429,
        Some(8 * 3600),
    );
    let mut p = Policy::new(&PolicyConfig {
        dnd,
        dnd_exempt_kinds: vec![CallKind::Notification],
        ..open()
    });
    p.check(night, &exempt).unwrap();
    let exempt_click = PolicyRequest {
        dnd_exempt: true,
        ..click("acme", N1, Some(N2))
    };
    refused(
        p.check(night, &exempt_click),
        "dnd_exempt_not_allowed",
        403,
        None,
    );
}

#[test]
fn account_daily_limit_is_429_until_utc_midnight() {
    let mut p = Policy::new(&PolicyConfig {
        account_day_calls_max: 3,
        ..open()
    });
    for i in 0..3 {
        p.admit(noon(), &notify("acme", &format!("+7912345670{i}")))
            .unwrap();
    }
    refused(
        p.check(noon(), &notify("acme", N1)),
        "account_daily_limit",
        429,
        Some(12 * 3600),
    );
    // Other accounts are not affected.
    p.check(noon(), &notify("other", N1)).unwrap();
    // The count resets at 00:00 UTC.
    refused(
        p.check(at(0, 23, 59, 59), &notify("acme", N1)),
        "account_daily_limit",
        429,
        Some(1),
    );
    p.admit(at(1, 0, 0, 0), &notify("acme", N1)).unwrap();
    assert_eq!(p.account_calls_today(at(1, 0, 0, 0), "acme"), 1);
    assert_eq!(p.account_calls_today(noon(), "acme"), 0);
}

#[test]
fn number_daily_limit_counts_all_accounts_and_resets_at_midnight() {
    let mut p = Policy::new(&PolicyConfig::default());
    // Default: 10 calls per number per day. Spread over the day so the
    // burst rule (5 in 60 s) stays quiet.
    for i in 0..10 {
        let t = at(0, 8 + i, 0, 0);
        p.admit(t, &notify(&format!("acct{i}"), N1)).unwrap();
    }
    assert_eq!(p.number_calls_today(noon(), "+7 912 345 67 89"), 10);
    refused(
        p.check(at(0, 18, 0, 0), &notify("new", N1)),
        "number_daily_limit",
        429,
        Some(6 * 3600),
    );
    p.check(at(0, 18, 0, 0), &notify("new", N2)).unwrap();
    // Day rollover.
    p.admit(at(1, 0, 0, 1), &notify("new", N1)).unwrap();
    assert_eq!(p.number_calls_today(at(1, 0, 0, 1), N1), 1);
}

#[test]
fn only_commit_counts() {
    let mut p = Policy::new(&PolicyConfig {
        number_day_calls_max: 1,
        cps_max: 1,
        ..open()
    });
    // Checked but never committed (say, no trunk was free): not counted.
    for _ in 0..5 {
        p.check(noon(), &notify("acme", N1)).unwrap();
    }
    assert_eq!(p.number_calls_today(noon(), N1), 0);
    let a = p.check(noon(), &notify("acme", N1)).unwrap();
    p.commit(noon(), &a).unwrap();
    assert_eq!(p.number_calls_today(noon(), N1), 1);
    refused(
        p.check(noon(), &notify("acme", N1)),
        "number_daily_limit",
        429,
        Some(12 * 3600),
    );
    let c = p.counters();
    assert_eq!((c.checked, c.admitted, c.committed), (7, 6, 1));
}

#[test]
fn global_cps_limit_is_429_and_refills() {
    let mut p = Policy::new(&PolicyConfig {
        cps_max: 3,
        ..open()
    });
    let t0 = noon();
    // A full bucket lets a burst of cps_max through.
    for i in 0..3 {
        p.admit(t0, &notify("acme", &format!("+7912345670{i}")))
            .unwrap();
    }
    refused(
        p.check(t0, &notify("acme", N1)),
        "global_cps_limit",
        429,
        Some(1),
    );
    // One token per 1/3 s.
    p.admit(t0 + Duration::from_millis(334), &notify("acme", N1))
        .unwrap();
    refused(
        p.check(t0 + Duration::from_millis(400), &notify("acme", N2)),
        "global_cps_limit",
        429,
        Some(1),
    );
    assert_eq!(p.counters().refused("global_cps_limit"), 2);
}

#[test]
fn number_burst_auto_blocks_once_and_expires() {
    // Default: more than 5 calls to one number within 60 s blocks it 1 h.
    let mut p = Policy::new(&PolicyConfig::default());
    let t0 = noon();
    for i in 0..5 {
        p.admit(
            t0 + Duration::from_secs(i * 10),
            &notify(&format!("a{i}"), N1),
        )
        .unwrap();
    }
    let t1 = t0 + Duration::from_secs(50);
    refused(
        p.check(t1, &notify("a9", N1)),
        "burst_blocked_number",
        429,
        Some(3600),
    );
    assert_eq!(
        p.poll_event(),
        Some(PolicyEvent::AutoBlocked {
            subject: BlockSubject::Number,
            value: N1.into(),
            until: t1 + Duration::from_secs(3600),
            reason: BlockReason::Burst {
                calls_max: 5,
                window_s: 60
            },
        })
    );
    // Further attempts are refused without another event.
    for s in [1, 600, 3599] {
        refused(
            p.check(t1 + Duration::from_secs(s), &notify("a9", N1)),
            "burst_blocked_number",
            429,
            Some(3600 - s as u32),
        );
    }
    assert_eq!(p.poll_event(), None);
    assert_eq!(p.counters().auto_blocks, 1);
    // Other numbers and the accounts are not blocked.
    p.check(t1, &notify("a0", N2)).unwrap();
    // The block ends; counting starts afresh (5 of 10 daily calls used).
    let t2 = t1 + Duration::from_secs(3600);
    for i in 0..5 {
        p.admit(t2 + Duration::from_secs(i), &notify("a0", N1))
            .unwrap();
    }
    refused(
        p.check(t2 + Duration::from_secs(5), &notify("a0", N1)),
        "number_daily_limit",
        429,
        Some(12 * 3600 - 50 - 3600 - 5),
    );
    assert_eq!(p.poll_event(), None);
    // Calls spread wider than the window never trip it.
    let t3 = t2 + Duration::from_secs(60);
    for i in 0..10 {
        p.admit(
            t3 + Duration::from_secs(i * 61),
            &notify("a0", "+4930123456"),
        )
        .unwrap();
    }
    assert_eq!(p.counters().auto_blocks, 1);
}

#[test]
fn account_burst_auto_blocks_once_expires_and_can_be_lifted() {
    let mut p = Policy::new(&PolicyConfig {
        account_burst_calls_max: 3,
        account_burst_window_s: 10,
        account_burst_block_s: 120,
        ..open()
    });
    let t0 = noon();
    for i in 0..3 {
        p.admit(t0, &notify("acme", &format!("+7912345670{i}")))
            .unwrap();
    }
    let e = refused(
        p.check(t0 + Duration::from_secs(9), &notify("acme", N1)),
        "burst_blocked_account",
        429,
        Some(120),
    );
    assert_eq!(e, PolicyError::BurstBlockedAccount { retry_after_s: 120 });
    match p.poll_event() {
        Some(PolicyEvent::AutoBlocked {
            subject: BlockSubject::Account,
            value,
            until,
            ..
        }) => {
            assert_eq!(value, "acme");
            assert_eq!(until, t0 + Duration::from_secs(129));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.poll_event(), None);
    refused(
        p.check(t0 + Duration::from_secs(100), &notify("acme", N2)),
        "burst_blocked_account",
        429,
        Some(29),
    );
    p.check(t0 + Duration::from_secs(9), &notify("other", N1))
        .unwrap();
    // Expires on its own.
    p.admit(t0 + Duration::from_secs(129), &notify("acme", N1))
        .unwrap();
    // And can be lifted by an operator.
    for _ in 0..2 {
        p.admit(t0 + Duration::from_secs(130), &notify("acme", N1))
            .unwrap();
    }
    refused(
        p.check(t0 + Duration::from_secs(130), &notify("acme", N1)),
        "burst_blocked_account",
        429,
        Some(120),
    );
    assert!(p.unblock_account(t0 + Duration::from_secs(131), "acme"));
    assert!(!p.unblock_account(t0 + Duration::from_secs(131), "acme"));
    p.check(t0 + Duration::from_secs(131), &notify("acme", N1))
        .unwrap();
    assert_eq!(p.counters().auto_blocks, 2);
}

#[test]
fn burst_on_account_and_number_at_once_blocks_both() {
    let mut p = Policy::new(&PolicyConfig {
        account_burst_calls_max: 2,
        number_burst_calls_max: 2,
        ..open()
    });
    for _ in 0..2 {
        p.admit(noon(), &notify("acme", N1)).unwrap();
    }
    refused(
        p.check(noon(), &notify("acme", N1)),
        "burst_blocked_account",
        429,
        Some(3600),
    );
    let subjects: Vec<_> = std::iter::from_fn(|| p.poll_event())
        .map(|PolicyEvent::AutoBlocked { subject, .. }| subject)
        .collect();
    assert_eq!(subjects, [BlockSubject::Account, BlockSubject::Number]);
    refused(
        p.check(noon(), &notify("other", N1)),
        "burst_blocked_number",
        429,
        Some(3600),
    );
    assert!(p.unblock_number(noon(), N1));
    p.check(noon(), &notify("other", N1)).unwrap();
}

#[test]
fn event_queue_is_bounded_and_counts_drops() {
    let mut p = Policy::new(&PolicyConfig {
        number_burst_calls_max: 1,
        ..open()
    });
    let n = EVENTS_MAX + 5;
    for i in 0..n {
        let num = format!("+4930{i:08}");
        p.admit(noon(), &notify("acme", &num)).unwrap();
        refused(
            p.check(noon(), &notify("acme", &num)),
            "burst_blocked_number",
            429,
            Some(3600),
        );
    }
    let c = p.counters();
    assert_eq!((c.auto_blocks, c.events_dropped), (n as u64, 5));
    assert_eq!(std::iter::from_fn(|| p.poll_event()).count(), EVENTS_MAX);
}

#[test]
fn reload_keeps_counts_blocks_and_counters() {
    let cfg = PolicyConfig {
        number_day_calls_max: 3,
        number_burst_calls_max: 2,
        ..open()
    };
    let mut p = Policy::new(&cfg);
    let t0 = noon();
    p.admit(t0, &notify("acme", N1)).unwrap();
    p.admit(t0, &notify("acme", N1)).unwrap();
    refused(
        p.check(t0, &notify("acme", N1)),
        "burst_blocked_number",
        429,
        Some(3600),
    );
    p.admit(t0, &notify("acme", N2)).unwrap();
    p.block_number(t0, "+4930123456", t0 + Duration::from_secs(60))
        .unwrap();
    refused(
        p.check(t0, &notify("acme", "bad")),
        "invalid_number",
        422,
        None,
    );
    let before = p.counters().clone();

    // Reload with a lower daily limit and no burst detection.
    p.reload(&PolicyConfig {
        number_day_calls_max: 1,
        number_burst_calls_max: 0,
        ..cfg.clone()
    });
    assert_eq!(p.counters(), &before);
    assert_eq!(p.number_calls_today(t0, N2), 1);
    refused(
        p.check(t0, &notify("acme", N2)),
        "number_daily_limit",
        429,
        Some(12 * 3600),
    );
    // The automatic block outlives the reload.
    refused(
        p.check(t0, &notify("acme", N1)),
        "burst_blocked_number",
        429,
        Some(3600),
    );
    // So does the runtime block.
    refused(
        p.check(t0, &notify("acme", "+4930123456")),
        "blocklisted",
        403,
        None,
    );
    // A reload that raises the limit lets the number through again.
    p.reload(&cfg);
    p.check(t0, &notify("acme", N2)).unwrap();
    assert_eq!(p.counters().refused("invalid_number"), 1);
}

#[test]
fn full_tables_refuse_new_subjects_until_entries_expire() {
    let mut p = Policy::new(&PolicyConfig {
        accounts_max: 2,
        numbers_max: 3,
        ..open()
    });
    let t0 = noon();
    p.admit(t0, &notify("a", N1)).unwrap();
    p.admit(t0, &notify("b", N2)).unwrap();
    // Account table full: a third account waits for midnight; the two
    // held go on.
    refused(
        p.check(t0, &notify("c", N1)),
        "policy_table_full",
        503,
        Some(12 * 3600),
    );
    p.admit(t0, &notify("a", "+4930123456")).unwrap();
    // Number table full.
    refused(
        p.check(t0, &notify("a", "+4930123457")),
        "policy_table_full",
        503,
        Some(12 * 3600),
    );
    p.admit(t0, &notify("b", N1)).unwrap();
    assert_eq!(p.tracked(), (2, 3));
    // Limits of held subjects are never forgotten to make room.
    assert_eq!(p.number_calls_today(t0, N1), 2);
    // Next UTC day, yesterday's entries are reclaimed.
    let t1 = at(1, 0, 0, 0);
    p.admit(t1, &notify("c", "+4930123457")).unwrap();
    assert_eq!(p.tracked(), (1, 1));
    assert_eq!(p.counters().refused("policy_table_full"), 2);
}

#[test]
fn commit_refuses_when_the_last_entry_was_taken_since_check() {
    let mut p = Policy::new(&PolicyConfig {
        numbers_max: 1,
        ..open()
    });
    let a = p.check(noon(), &notify("acme", N1)).unwrap();
    let b = p.check(noon(), &notify("acme", N2)).unwrap();
    p.commit(noon(), &a).unwrap();
    refused(
        p.commit(noon(), &b),
        "policy_table_full",
        503,
        Some(12 * 3600),
    );
    // Nothing of b was counted, not even on the account.
    assert_eq!(p.account_calls_today(noon(), "acme"), 1);
    assert_eq!(p.counters().committed, 1);
}

#[test]
fn every_code_has_its_status() {
    let r = 7;
    let all = [
        (PolicyError::InvalidAccount, "invalid_account", 422, None),
        (PolicyError::InvalidNumber, "invalid_number", 422, None),
        (
            PolicyError::InvalidSupportLine,
            "invalid_support_line",
            422,
            None,
        ),
        (
            PolicyError::DndExemptNotAllowed,
            "dnd_exempt_not_allowed",
            403,
            None,
        ),
        (
            PolicyError::DestinationNotAllowed,
            "destination_not_allowed",
            403,
            None,
        ),
        (
            PolicyError::SupportLineNotAllowed,
            "support_line_not_allowed",
            403,
            None,
        ),
        (PolicyError::Blocklisted, "blocklisted", 403, None),
        (
            PolicyError::DoNotDisturb { retry_after_s: r },
            "do_not_disturb",
            429,
            Some(r),
        ),
        (
            PolicyError::BurstBlockedNumber { retry_after_s: r },
            "burst_blocked_number",
            429,
            Some(r),
        ),
        (
            PolicyError::BurstBlockedAccount { retry_after_s: r },
            "burst_blocked_account",
            429,
            Some(r),
        ),
        (
            PolicyError::AccountDailyLimit { retry_after_s: r },
            "account_daily_limit",
            429,
            Some(r),
        ),
        (
            PolicyError::NumberDailyLimit { retry_after_s: r },
            "number_daily_limit",
            429,
            Some(r),
        ),
        (
            PolicyError::GlobalCpsLimit { retry_after_s: r },
            "global_cps_limit",
            429,
            Some(r),
        ),
        (
            PolicyError::TableFull { retry_after_s: r },
            "policy_table_full",
            503,
            Some(r),
        ),
    ];
    assert_eq!(all.len(), PolicyError::CODES.len());
    for (i, (e, code, status, retry)) in all.into_iter().enumerate() {
        assert_eq!(e.index(), i);
        assert_eq!(
            (e.code(), e.http_status(), e.retry_after_s()),
            (code, status, retry)
        );
        assert!(!e.to_string().is_empty());
    }
    let mut c = PolicyCounters::default();
    c.refused[1] = 4;
    assert_eq!(c.refused("invalid_number"), 4);
    assert_eq!(c.refused("no_such_code"), 0);
    assert_eq!(
        c.refusals().filter(|&(_, n)| n > 0).collect::<Vec<_>>(),
        [("invalid_number", 4)]
    );
}

#[test]
fn times_outside_the_usual_range_do_not_panic() {
    let mut p = Policy::new(&PolicyConfig {
        dnd: vec![DndConfig {
            prefix: "+".into(),
            utc_offset_minutes: 840,
            start: "23:00".into(),
            end: "22:59".into(),
        }],
        dnd_exempt_kinds: vec![CallKind::Notification],
        ..PolicyConfig::default()
    });
    let exempt = PolicyRequest {
        dnd_exempt: true,
        ..notify("acme", N1)
    };
    let far = UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 1000);
    for t in [UNIX_EPOCH - Duration::from_secs(86_400), UNIX_EPOCH, far] {
        let _ = p.admit(t, &exempt);
        let _ = p.admit(t, &notify("acme", N1));
        let _ = p.block_number(t, N2, far);
        let _ = p.unblock_number(t, N2);
        if t == UNIX_EPOCH {
            // Before the epoch counts as the epoch: two exempt calls on day
            // 0 (the others fell into the window).
            assert_eq!(p.account_calls_today(UNIX_EPOCH, "acme"), 2);
        }
    }
    assert_eq!(p.account_calls_today(far, "acme"), 1);
}

/// A random string: mostly a valid number (often one of a few, so limits
/// and bursts are reached), sometimes arbitrary text.
fn random_text(rng: &mut StdRng) -> String {
    match rng.gen_range(0..10) {
        0..=2 => format!("+{}", rng.gen_range(10_000_000u64..99_999_999_999)),
        3..=4 => format!("+4930 1234-{:03}", rng.gen_range(0..30)),
        5..=7 => format!("+7912345{:04}", rng.gen_range(0..20)),
        8 => (0..rng.gen_range(0..40))
            .map(|_| char::from(rng.gen_range(b' '..=b'~')))
            .collect(),
        _ => (0..rng.gen_range(0..12))
            .map(|_| rng.gen::<char>())
            .collect(),
    }
}

/// A valid config with small tables and random limits.
fn random_config(rng: &mut StdRng) -> PolicyConfig {
    let prefixes = ["+", "+7", "+79", "+49", "+1"];
    let pick = |rng: &mut StdRng| -> Vec<String> {
        prefixes
            .iter()
            .filter(|_| rng.gen_bool(0.2))
            .map(|s| s.to_string())
            .collect()
    };
    let cfg = PolicyConfig {
        allowed_prefixes: pick(rng),
        denied_prefixes: pick(rng),
        blocked_prefixes: pick(rng).into_iter().filter(|p| p != "+").collect(),
        account_day_calls_max: rng.gen_range(1..50),
        number_day_calls_max: rng.gen_range(1..20),
        cps_max: rng.gen_range(1..50),
        accounts_max: rng.gen_range(1..8),
        numbers_max: rng.gen_range(1..16),
        runtime_blocks_max: rng.gen_range(1..4),
        number_burst_calls_max: rng.gen_range(0..6),
        number_burst_window_s: rng.gen_range(1..120),
        number_burst_block_s: rng.gen_range(1..600),
        account_burst_calls_max: rng.gen_range(0..10),
        account_burst_window_s: rng.gen_range(1..120),
        account_burst_block_s: rng.gen_range(1..600),
        dnd: if rng.gen_bool(0.5) {
            vec![DndConfig {
                prefix: "+7".into(),
                utc_offset_minutes: rng.gen_range(-720..=840),
                start: format!("{:02}:{:02}", rng.gen_range(0..24), rng.gen_range(0..60)),
                end: "12:00".into(),
            }]
        } else {
            Vec::new()
        },
        dnd_exempt_kinds: if rng.gen_bool(0.5) {
            vec![CallKind::Notification]
        } else {
            Vec::new()
        },
        ..PolicyConfig::default()
    };
    if cfg.validate().is_ok() {
        cfg
    } else {
        // Only start == end can be invalid here.
        PolicyConfig {
            dnd: Vec::new(),
            ..cfg
        }
    }
}

#[test]
fn random_inputs_never_panic_and_stay_bounded() {
    let mut rng = StdRng::seed_from_u64(0x6b6f6c6f6b6f6c);
    for _ in 0..40 {
        let cfg = random_config(&mut rng);
        cfg.validate().unwrap();
        let mut p = Policy::new(&cfg);
        let mut t = DAY * 86_400_000 + rng.gen_range(0..86_400_000);
        let accounts = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        for _ in 0..2_000 {
            // Mostly forward, sometimes a backward step of the wall clock.
            t = match rng.gen_range(0..100) {
                0 => t.saturating_sub(rng.gen_range(0..7_200_000)),
                1..=5 => t + rng.gen_range(0..100_000_000),
                _ => t + rng.gen_range(0..2_000),
            };
            let now = UNIX_EPOCH + Duration::from_millis(t);
            let number = random_text(&mut rng);
            let support = random_text(&mut rng);
            let account = if rng.gen_bool(0.05) {
                random_text(&mut rng)
            } else {
                accounts[rng.gen_range(0..accounts.len())].to_string()
            };
            let kind = if rng.gen_bool(0.5) {
                CallKind::ClickToCall
            } else {
                CallKind::Notification
            };
            let req = PolicyRequest {
                account: &account,
                number: &number,
                kind,
                // Mostly what the kind needs, sometimes not.
                support_line: (rng.gen_bool(0.1) != (kind == CallKind::ClickToCall))
                    .then_some(support.as_str()),
                dnd_exempt: rng.gen_bool(0.1),
            };
            match rng.gen_range(0..100) {
                0..=39 => {
                    if let Ok(a) = p.check(now, &req) {
                        assert_eq!(Some(*a.number()), E164::parse(&number));
                        if rng.gen_bool(0.8) {
                            let _ = p.commit(now, &a);
                        }
                    }
                }
                40..=89 => {
                    let _ = p.admit(now, &req);
                }
                90..=93 => {
                    let until = now + Duration::from_secs(rng.gen_range(0..600));
                    let _ = p.block_number(now, &number, until);
                }
                94..=95 => {
                    p.unblock_number(now, &number);
                    p.unblock_account(now, &account);
                }
                96 => {
                    p.reload(&random_config(&mut rng));
                }
                _ => {
                    while let Some(PolicyEvent::AutoBlocked { until, .. }) = p.poll_event() {
                        assert!(until >= UNIX_EPOCH);
                    }
                }
            }
            assert!(p.events.len() <= EVENTS_MAX);
            // Shrinking reloads keep what is held: bounded by the largest
            // maximum seen (random_config draws below 4, 8 and 16).
            assert!(p.runtime_blocks.len() <= 3);
            let (a, n) = p.tracked();
            assert!(a <= 8 && n <= 16, "{a} {n}");
        }
        // Every check is admitted or refused; commits refuse only for
        // capacity, which is also counted.
        let c = p.counters();
        assert!(c.admitted + c.refused.iter().sum::<u64>() >= c.checked);
        assert!(c.committed <= c.admitted);
    }
}
