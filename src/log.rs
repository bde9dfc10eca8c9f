//! Structured logs (SPEC F-O4): one JSON object per line on stderr, or
//! plain text, with phone numbers masked unless `log.mask_numbers = false`.
//!
//! The control plane logs through here (calls' state changes, reloads,
//! draining, trunk health); the shards' packet path never logs. Set once at
//! start ([`init`]); before that, and in tests, it writes JSON at `info`.
//!
//! ```text
//! {"ts":"2026-11-26T20:49:20.746Z","level":"info","msg":"call state",
//!  "call_id":"call_e1e4a34d0ab57dbd","state":"dialing","number":"+7900*****67"}
//! ```

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something is wrong but handled.
    Warn,
    /// Normal operation worth a line.
    Info,
    /// Details.
    Debug,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// From the config's spelling (`trace` counts as debug).
    pub fn parse(s: &str) -> Level {
        match s {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "debug" | "trace" => Level::Debug,
            _ => Level::Info,
        }
    }
}

struct Settings {
    json: bool,
    level: Level,
    mask: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings {
        json: true,
        level: Level::Info,
        mask: true,
    })
}

/// Sets format, level and masking from `[log]`; the first call wins.
pub fn init(cfg: &crate::config::LogConfig) {
    let _ = SETTINGS.set(Settings {
        json: cfg.format != "text",
        level: Level::parse(&cfg.level),
        mask: cfg.mask_numbers,
    });
}

/// A field's value.
pub enum Field<'a> {
    /// A string.
    Str(&'a str),
    /// A phone number: masked unless masking is off.
    Number(&'a str),
    /// An integer.
    Int(i64),
}

/// All but the last three digits of a number replaced by `*`.
pub fn mask(number: &str) -> String {
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                // Keep the country code's first digit and the last three.
                if seen > 1 && seen + 3 <= digits {
                    return '*';
                }
            }
            c
        })
        .collect()
}

fn rfc3339_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    crate::control::api::UtcTime { unix_ms: ms }.to_string()
}

/// Writes one line if `level` passes.
pub fn log(level: Level, msg: &str, fields: &[(&str, Field<'_>)]) {
    let s = settings();
    if level > s.level {
        return;
    }
    let value = |f: &Field<'_>| -> serde_json::Value {
        match f {
            Field::Str(v) => (*v).into(),
            Field::Number(v) if s.mask => mask(v).into(),
            Field::Number(v) => (*v).into(),
            Field::Int(v) => (*v).into(),
        }
    };
    let line = if s.json {
        let mut m = serde_json::Map::new();
        m.insert("ts".into(), rfc3339_now().into());
        m.insert("level".into(), level.as_str().into());
        m.insert("msg".into(), msg.into());
        for (k, f) in fields {
            m.insert((*k).into(), value(f));
        }
        serde_json::Value::Object(m).to_string()
    } else {
        let mut t = format!("kolokol: {} {msg}", level.as_str());
        for (k, f) in fields {
            let v = value(f);
            match v.as_str() {
                Some(x) => t.push_str(&format!(" {k}={x}")),
                None => t.push_str(&format!(" {k}={v}")),
            }
        }
        t
    };
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn numbers_are_masked_but_recognisable() {
        assert_eq!(mask("+79001234567"), "+7*******567");
        assert_eq!(mask("4930123456"), "4******456");
        assert_eq!(mask("123"), "123");
        assert_eq!(mask(""), "");
        assert!(!mask("+79001234567").contains("900123"));
    }
}
