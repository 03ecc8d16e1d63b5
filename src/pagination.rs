//! Keyset pagination shared by every list endpoint: newest first, `limit` + opaque `cursor`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{DomainError, DomainResult, codes};
use crate::time::Timestamp;

/// A new id for a row of a list served newest first. Lists order by `created_at` (to the
/// millisecond) and then by id, so two rows made in the same millisecond are told apart
/// by their ids: UUID v7, which this process hands out in creation order and whose text
/// sorts as its value, keeps "newest first" true for them too.
pub fn new_row_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

#[derive(Debug, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (1-200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `nextCursor` from the previous page.
    pub cursor: Option<String>,
}

/// Position after which the next page starts: (created_at, id) of the last item seen.
struct Cursor {
    at: Timestamp,
    id: String,
}

/// The bounds of one newest-first page. Bind `at`, `at`, `id`, `fetch` to the four
/// placeholders of [`keyset_page!`](crate::keyset_page), then build the page with
/// [`Keyset::page`].
pub struct Keyset {
    pub at: Timestamp,
    pub id: String,
    /// Rows to fetch: one more than the page, which only signals that more exist.
    pub fetch: i64,
    limit: i64,
}

/// A row listed newest first, keyed by `(created_at, id)`.
pub trait Keyed {
    fn created_at(&self) -> Timestamp;
    fn id(&self) -> &str;
}

/// The keyset condition and ordering every list query ends with; the arguments are the
/// numbers of the placeholders bound to [`Keyset`]'s `at`, `at`, `id` and `fetch`.
#[macro_export]
macro_rules! keyset_page {
    ($at:literal, $at_again:literal, $id:literal, $fetch:literal) => {
        concat!(
            " (created_at < $",
            $at,
            " OR (created_at = $",
            $at_again,
            " AND id < $",
            $id,
            ")) ORDER BY created_at DESC, id DESC LIMIT $",
            $fetch
        )
    };
}

impl PageQuery {
    pub fn keyset(&self) -> DomainResult<Keyset> {
        let limit = self.limit()?;
        let cursor = self.cursor()?;
        Ok(Keyset {
            at: cursor.at,
            id: cursor.id,
            fetch: limit + 1,
            limit,
        })
    }

    fn limit(&self) -> DomainResult<i64> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT as i64),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n as i64),
            Some(_) => Err(DomainError::validation(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            ))),
        }
    }

    /// The cursor, or a position before everything (so one SQL text serves both cases).
    fn cursor(&self) -> DomainResult<Cursor> {
        match &self.cursor {
            // Year 9999, not DateTime::MAX_UTC: its "+262143-…" text would sort *before*
            // real dates in SQLite's text comparison.
            None => Ok(Cursor {
                at: DateTime::<Utc>::from_timestamp(253_402_300_799, 0).expect("valid date"),
                id: String::new(),
            }),
            Some(raw) => decode(raw)
                .ok_or_else(|| DomainError::invalid(codes::INVALID_CURSOR, "Invalid cursor")),
        }
    }
}

fn decode(raw: &str) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (millis, id) = text.split_once('|')?;
    // Ids never hold control characters, and PostgreSQL refuses a NUL in text outright.
    if id.chars().any(char::is_control) {
        return None;
    }
    let at = DateTime::<Utc>::from_timestamp_millis(millis.parse().ok()?)?;
    if !crate::time::in_supported_range(&at) {
        return None;
    }
    Some(Cursor {
        at,
        id: id.to_string(),
    })
}

fn encode(at: &Timestamp, id: &str) -> String {
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

impl Keyset {
    /// The page made of `fetch` rows (the extra row only signals "more").
    pub fn page<T: Keyed>(&self, mut rows: Vec<T>) -> Page<T> {
        let next_cursor = if rows.len() as i64 > self.limit {
            rows.truncate(self.limit as usize);
            rows.last()
                .map(|last| encode(&last.created_at(), last.id()))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids made one after another, most of them in the same millisecond, sort (as the text
    /// the database compares) in the order they were made.
    #[test]
    fn row_ids_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..2_000).map(|_| new_row_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order");
        assert!(ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()));
    }
}
