//! Keyset pagination shared by every list endpoint: newest first, `limit` + opaque `cursor`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{DomainError, DomainResult};
use crate::time::Timestamp;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (1-200, default 50).
    pub limit: Option<u32>,
    /// `nextCursor` from the previous page.
    pub cursor: Option<String>,
}

/// Position after which the next page starts: (created_at, id) of the last item seen.
pub struct Cursor {
    pub at: Timestamp,
    pub id: String,
}

impl PageQuery {
    pub fn limit(&self) -> DomainResult<i64> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT as i64),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n as i64),
            Some(_) => Err(DomainError::validation(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            ))),
        }
    }

    /// The cursor, or a position before everything (so one SQL text serves both cases).
    pub fn cursor(&self) -> DomainResult<Cursor> {
        match &self.cursor {
            // Year 9999, not DateTime::MAX_UTC: its "+262143-…" text would sort *before*
            // real dates in SQLite's text comparison.
            None => Ok(Cursor {
                at: DateTime::<Utc>::from_timestamp(253_402_300_799, 0).expect("valid date"),
                id: String::new(),
            }),
            Some(raw) => {
                decode(raw).ok_or_else(|| DomainError::invalid("INVALID_CURSOR", "Invalid cursor"))
            }
        }
    }
}

fn decode(raw: &str) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (millis, id) = text.split_once('|')?;
    let at = DateTime::<Utc>::from_timestamp_millis(millis.parse().ok()?)?;
    if !crate::time::in_supported_range(&at) {
        return None;
    }
    Some(Cursor {
        at,
        id: id.to_string(),
    })
}

pub fn encode(at: &Timestamp, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_millis()))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows (the extra row only signals "more").
    pub fn from_rows(
        mut rows: Vec<T>,
        limit: i64,
        key: impl Fn(&T) -> (Timestamp, String),
    ) -> Page<T> {
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|last| {
                let (at, id) = key(last);
                encode(&at, &id)
            })
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}
