//! Do-not-disturb hours (SPEC F-P2): a quiet window in the destination's
//! local time, chosen by the longest matching prefix of the number.
//!
//! Local time is UTC plus a fixed offset per prefix. Daylight-saving rules
//! are deliberately not modelled (no time-zone database in a sans-IO
//! module): where a country shifts its clocks, configure the offset that
//! keeps the window quiet in both seasons, or widen the window by an hour.

use crate::config::DndConfig;

use super::number::E164;

/// Seconds in a day.
const DAY_S: u64 = 86_400;

/// Parses `HH:MM` (24-hour clock, two digits each, 00:00..=23:59) into
/// minutes after midnight.
pub fn parse_time_of_day(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return None;
    }
    let h = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
    let m = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// One quiet window.
#[derive(Clone, Debug)]
struct Rule {
    prefix: Box<str>,
    /// Local time minus UTC, seconds.
    offset_s: i64,
    /// Window start, seconds after local midnight (inclusive).
    start_s: u64,
    /// Window end, seconds after local midnight (exclusive); below
    /// `start_s` when the window wraps midnight.
    end_s: u64,
}

/// The configured windows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dnd {
    /// Longest prefix first, so the first match is the longest.
    rules: Vec<Rule>,
}

impl Dnd {
    /// Compiles `[[policy.dnd]]`. Entries a validated config cannot have (bad
    /// times, equal start and end) are left out.
    pub(crate) fn new(cfg: &[DndConfig]) -> Self {
        let mut rules: Vec<Rule> = cfg
            .iter()
            .filter_map(|d| {
                let start = parse_time_of_day(&d.start)?;
                let end = parse_time_of_day(&d.end)?;
                (start != end && super::number::is_prefix(&d.prefix)).then(|| Rule {
                    prefix: d.prefix.as_str().into(),
                    offset_s: i64::from(d.utc_offset_minutes) * 60,
                    start_s: u64::from(start) * 60,
                    end_s: u64::from(end) * 60,
                })
            })
            .collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Dnd { rules }
    }

    /// If `n` is inside its quiet window at `now_s` (seconds since the Unix
    /// epoch, UTC), the seconds until the window ends; `None` otherwise.
    pub(crate) fn quiet_for(&self, n: &E164, now_s: u64) -> Option<u64> {
        let r = self.rules.iter().find(|r| n.has_prefix(&r.prefix))?;
        // Offsets are within a day (validated: -720..=840 minutes), so
        // adding a day keeps the sum positive before the remainder.
        let utc = (now_s % DAY_S) as i64;
        let local = (utc + DAY_S as i64 + r.offset_s).rem_euclid(DAY_S as i64) as u64;
        let inside = if r.start_s < r.end_s {
            (r.start_s..r.end_s).contains(&local)
        } else {
            local >= r.start_s || local < r.end_s
        };
        inside.then(|| (r.end_s + DAY_S - local) % DAY_S)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn rule(prefix: &str, offset_min: i32, start: &str, end: &str) -> DndConfig {
        DndConfig {
            prefix: prefix.into(),
            utc_offset_minutes: offset_min,
            start: start.into(),
            end: end.into(),
        }
    }

    fn n(s: &str) -> E164 {
        E164::parse(s).unwrap()
    }

    /// Seconds since the epoch of `h:m` UTC on some day.
    fn at(h: u64, m: u64) -> u64 {
        20_000 * DAY_S + h * 3600 + m * 60
    }

    #[test]
    fn times_of_day() {
        assert_eq!(parse_time_of_day("00:00"), Some(0));
        assert_eq!(parse_time_of_day("21:30"), Some(21 * 60 + 30));
        assert_eq!(parse_time_of_day("23:59"), Some(1439));
        for s in [
            "24:00", "9:00", "09:60", "0900", "09:00 ", "+9:00", "ab:cd", "09:0", "",
        ] {
            assert_eq!(parse_time_of_day(s), None, "{s:?}");
        }
    }

    #[test]
    fn window_wrapping_midnight_in_local_time() {
        // Moscow, UTC+3: quiet 21:00-09:00 local = 18:00-06:00 UTC.
        let d = Dnd::new(&[rule("+7", 180, "21:00", "09:00")]);
        let ru = n("+79123456789");
        assert_eq!(d.quiet_for(&ru, at(17, 59)), None);
        assert_eq!(d.quiet_for(&ru, at(18, 0)), Some(12 * 3600));
        assert_eq!(d.quiet_for(&ru, at(23, 30)), Some(6 * 3600 + 30 * 60));
        assert_eq!(d.quiet_for(&ru, at(0, 0)), Some(6 * 3600));
        assert_eq!(d.quiet_for(&ru, at(5, 59)), Some(60));
        assert_eq!(d.quiet_for(&ru, at(6, 0)), None);
        // Other countries are not covered.
        assert_eq!(d.quiet_for(&n("+4930123456"), at(23, 0)), None);
    }

    #[test]
    fn window_inside_one_day_and_negative_offset() {
        // New York in winter, UTC-5: quiet 12:00-13:00 local = 17-18 UTC.
        let d = Dnd::new(&[rule("+1", -300, "12:00", "13:00")]);
        let us = n("+12125550100");
        assert_eq!(d.quiet_for(&us, at(16, 59)), None);
        assert_eq!(d.quiet_for(&us, at(17, 0)), Some(3600));
        assert_eq!(d.quiet_for(&us, at(18, 0)), None);
        // Local midnight crossing by the offset alone: 01:00 UTC is 20:00
        // the day before in New York.
        let d = Dnd::new(&[rule("+1", -300, "20:00", "22:00")]);
        assert_eq!(d.quiet_for(&us, at(1, 0)), Some(2 * 3600));
        assert_eq!(d.quiet_for(&us, at(0, 59)), None);
    }

    #[test]
    fn longest_prefix_picks_the_offset() {
        // +7 is Russia (UTC+3 here); +77 is Kazakhstan (UTC+5).
        let d = Dnd::new(&[
            rule("+7", 180, "21:00", "09:00"),
            rule("+77", 300, "21:00", "09:00"),
        ]);
        // 17:00 UTC: 20:00 in Moscow (not quiet), 22:00 in Almaty (quiet).
        assert_eq!(d.quiet_for(&n("+79123456789"), at(17, 0)), None);
        assert_eq!(d.quiet_for(&n("+77011234567"), at(17, 0)), Some(11 * 3600));
        // Order in the config does not matter.
        let d = Dnd::new(&[
            rule("+77", 300, "21:00", "09:00"),
            rule("+7", 180, "21:00", "09:00"),
        ]);
        assert_eq!(d.quiet_for(&n("+79123456789"), at(17, 0)), None);
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let d = Dnd::new(&[
            rule("+", 840, "00:00", "23:59"),
            rule("+1", -720, "23:59", "00:00"),
        ]);
        for t in [0, 1, u64::MAX, u64::MAX - DAY_S] {
            let _ = d.quiet_for(&n("+4930123456"), t);
            let _ = d.quiet_for(&n("+12125550100"), t);
        }
    }
}
