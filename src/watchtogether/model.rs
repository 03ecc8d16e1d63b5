//! Watch Together wire values: JavaScript-compatible coercions (the StreamVault reference
//! backend is Node.js, and its clients rely on its conversions), room codes and the
//! summaries rooms are described by.

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The 32-character code alphabet: no I, O, 0 or 1.
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
pub const CODE_LEN: usize = 6;

pub fn random_code() -> String {
    let mut rng = rand::thread_rng();
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

/// The room code a WebSocket URL binds to: its last `/` segment, uppercased; none when that
/// is empty or `WATCHTOGETHER`.
pub fn code_from_path(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or_default().to_uppercase();
    (!last.is_empty() && last != "WATCHTOGETHER").then_some(last)
}

/// `Number(v)` as JavaScript computes it, for the values the protocol accepts: numbers,
/// numeric strings (`""` is 0), `null`/`false` (0) and `true` (1). `None` is "not a number".
pub fn js_number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::Null | Value::Bool(false) => 0.0,
        Value::Bool(true) => 1.0,
        Value::String(s) => parse_js_number(s)?,
        _ => return None,
    };
    (!n.is_nan()).then_some(n)
}

fn parse_js_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    match t {
        "Infinity" | "+Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(digits) = t.strip_prefix(prefix) {
            return u64::from_str_radix(digits, radix).ok().map(|n| n as f64);
        }
    }
    // Rust also accepts "inf", "nan" and "infinity"; JavaScript does not.
    if t.bytes()
        .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
    {
        return None;
    }
    t.parse::<f64>().ok()
}

/// JavaScript truthiness of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// A number as JavaScript prints it (`12`, not `12.0`).
pub fn js_number_string(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n == n.trunc() && n.abs() < 1e21 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// `String(v)` as JavaScript computes it (template literals do the same).
pub fn js_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => js_number_string(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Null => String::new(),
                other => js_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

/// A JSON number for `f` as `JSON.stringify` writes it: a whole number without a
/// fraction (`115`, not `115.0`: clients read some of these into integers), and non-finite
/// values as `null`.
pub fn num(f: f64) -> Value {
    /// Beyond 2^53 an f64 holds no fraction and JavaScript still prints every digit; i64
    /// covers the range clients meet (positions, RTTs, milliseconds).
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT {
        return Value::from(f as i64);
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A position as `start`, `sync` and `state_report` read it: JS-number coercion, at least
/// 0. A non-finite value (`"Infinity"`, `1e999`) counts as not a number, as it would
/// otherwise be sent on as `null` and stored as a position no snapshot can hold.
pub fn js_position(v: &Value) -> Option<f64> {
    js_number(v).filter(|p| p.is_finite()).map(|p| p.max(0.0))
}

/// The longest `client_id` a room keeps (UUIDs are 36).
pub const MAX_CLIENT_ID_CHARS: usize = 128;
/// The largest `media_id`, `media_title` or `media_match_key` a room keeps, as JSON.
pub const MAX_MEDIA_FIELD_BYTES: usize = 2048;
/// The largest string a room stores for a client's position, duration or RTT.
pub const MAX_STORED_STRING_BYTES: usize = 64;

/// Values a room stores as sent and hands back to every participant (a heartbeat's
/// position, a duration, an RTT) are kept only when they are a number, a boolean, `null`
/// or a short string: anything else would be stored, persisted and re-sent to every
/// participant twice a second.
pub fn storable_scalar(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
        Value::String(s) => s.len() <= MAX_STORED_STRING_BYTES,
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Whether a create's media fields fit [`MAX_MEDIA_FIELD_BYTES`] each.
pub fn media_fields_fit(msg: &Value) -> bool {
    ["media_id", "media_title", "media_match_key"]
        .iter()
        .filter_map(|k| msg.get(k))
        .all(|v| v.to_string().len() <= MAX_MEDIA_FIELD_BYTES)
}

/// The tokens of a `|`-separated media match key: trimmed, lowercased, empties dropped.
pub fn match_tokens(key: &str) -> Vec<String> {
    key.trim()
        .to_lowercase()
        .split('|')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// How a match key or title arrives: absent, `null` or `false` count as empty.
pub fn loose_string(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => String::new(),
        Some(v) => js_string(v),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayState {
    Waiting,
    Playing,
    Paused,
}

/// `{id, nickname, is_host, is_ready}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParticipantSummary {
    pub id: String,
    pub nickname: String,
    pub is_host: bool,
    pub is_ready: bool,
}

/// A room as `GET /api/watchtogether/rooms/{code}` and `room_state` describe it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoomSummary {
    pub code: String,
    /// Whatever JSON the host created the room with.
    #[schema(value_type = serde_json::Value)]
    pub media_id: Value,
    /// Whatever JSON the host created the room with.
    #[schema(value_type = serde_json::Value)]
    pub media_title: Value,
    pub host_id: String,
    #[schema(value_type = String)]
    pub state: PlayState,
    pub is_playing: bool,
    #[serde(serialize_with = "js_number_field")]
    pub current_position: f64,
    pub participants: Vec<ParticipantSummary>,
}

/// Serializes an `f64` field as [`num`] writes it (`42`, not `42.0`).
fn js_number_field<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&num(*value), serializer)
}

/// `POST /api/watchtogether/rooms` answers this.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedRoom {
    pub code: String,
    pub host_id: String,
    /// Whatever JSON the host created the room with.
    #[schema(value_type = serde_json::Value)]
    pub media_id: Value,
    /// Whatever JSON the host created the room with.
    #[schema(value_type = serde_json::Value)]
    pub media_title: Value,
    pub participants: Vec<ParticipantSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_coerce_like_javascript() {
        assert_eq!(js_number(&json!(12.5)), Some(12.5));
        assert_eq!(js_number(&json!(" 7 ")), Some(7.0));
        assert_eq!(js_number(&json!("")), Some(0.0));
        assert_eq!(js_number(&json!(null)), Some(0.0));
        assert_eq!(js_number(&json!(false)), Some(0.0));
        assert_eq!(js_number(&json!(true)), Some(1.0));
        assert_eq!(js_number(&json!("0x10")), Some(16.0));
        assert_eq!(js_number(&json!("1e3")), Some(1000.0));
        assert_eq!(js_number(&json!("abc")), None);
        assert_eq!(js_number(&json!("inf")), None);
        assert_eq!(js_number(&json!("nan")), None);
        assert_eq!(js_number(&json!({})), None);
        assert_eq!(js_number(&json!("Infinity")), Some(f64::INFINITY));
    }

    #[test]
    fn strings_and_truthiness_follow_javascript() {
        assert_eq!(js_string(&json!(424242)), "424242");
        assert_eq!(js_string(&json!(12.0)), "12");
        assert_eq!(js_string(&json!(1.5)), "1.5");
        assert_eq!(js_string(&json!("x")), "x");
        assert_eq!(js_string(&json!(null)), "null");
        assert_eq!(js_string(&json!([1, null, "a"])), "1,,a");
        assert_eq!(js_string(&json!({"a": 1})), "[object Object]");
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!("")));
        assert!(truthy(&json!("false")));
        assert!(truthy(&json!([])));
    }

    #[test]
    fn codes_use_the_alphabet_and_urls_bind_codes() {
        let code = random_code();
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        assert_eq!(
            code_from_path("/ws/watchtogether/abc234"),
            Some("ABC234".into())
        );
        assert_eq!(code_from_path("/ws/watchtogether"), None);
        assert_eq!(code_from_path("/ws/watchtogether/"), None);
        assert_eq!(code_from_path("/ws/watchtogether/x?y=1"), Some("X".into()));
    }

    #[test]
    fn match_keys_split_on_pipes() {
        assert_eq!(
            match_tokens(" File:A | title:B ||"),
            vec!["file:a".to_string(), "title:b".to_string()]
        );
        assert!(match_tokens("  ").is_empty());
    }
}
