//! Timestamps: UTC, millisecond precision (what JavaScript `Date` carries), serialised as
//! ISO-8601 with milliseconds and `Z`, e.g. `2026-11-23T04:50:00.123Z`.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

pub type Timestamp = DateTime<Utc>;

/// Now, truncated to milliseconds so values survive a database round trip unchanged.
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(3)
}

pub fn iso(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `#[serde(with = "crate::time::iso_millis")]`
pub mod iso_millis {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&iso(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::time::iso_millis_opt")]`
pub mod iso_millis_opt {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&iso(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// Timestamps clients may send: 1970-01-01 to 9999-12-31. Both databases store these (and
/// SQLite's text ordering holds only for four-digit years).
pub fn in_supported_range(t: &Timestamp) -> bool {
    (0..=253_402_300_799).contains(&t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_millis_and_z() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T04:50:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(iso(&t), "2026-11-23T04:50:00.000Z");
    }
}
