//! Admission control for `MEDIA_MAX_PUBLISHERS`, `MEDIA_MAX_SUBSCRIBERS_PER_ROOM` and the
//! per-account fair shares (`MEDIA_MAX_PUBLISHERS_PER_USER`, `MEDIA_MAX_SUBSCRIBERS_PER_USER`),
//! so one account cannot take every slot on the server.
//!
//! Slots are RAII guards: a transport that fails half-way drops its slot and can never leak
//! capacity. Admission happens once per transport, never on the packet path, so a single
//! mutex is fine here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaLimits {
    /// Live publishers across the whole server.
    pub max_publishers: u32,
    /// Live subscribers in any one room.
    pub max_subscribers_per_room: u32,
    /// Live publishers of any one account (across its rooms).
    pub max_publishers_per_account: u32,
    /// Live subscribers of any one account (across its rooms).
    pub max_subscribers_per_account: u32,
}

impl MediaLimits {
    /// The server-wide limits with fair shares as large as they are (no per-account cap
    /// below them): for tests and embedders that have a single account.
    pub fn server_wide(max_publishers: u32, max_subscribers_per_room: u32) -> Self {
        Self {
            max_publishers,
            max_subscribers_per_room,
            max_publishers_per_account: u32::MAX,
            max_subscribers_per_account: u32::MAX,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    #[error("the server already has its maximum of {max} live publishers")]
    TooManyPublishers { max: u32 },
    #[error("this stream already has a publisher")]
    RoomHasPublisher,
    #[error("this stream already has its maximum of {max} viewers")]
    TooManySubscribers { max: u32 },
    #[error("this account already has its maximum of {max} live cameras")]
    AccountPublisherLimit { max: u32 },
    #[error("this account already has its maximum of {max} live viewers")]
    AccountSubscriberLimit { max: u32 },
}

#[derive(Default)]
struct RoomCount {
    publisher: bool,
    subscribers: u32,
}

#[derive(Default)]
struct AccountCount {
    publishers: u32,
    subscribers: u32,
}

#[derive(Default)]
struct Counts {
    publishers: u32,
    rooms: HashMap<String, RoomCount>,
    accounts: HashMap<String, AccountCount>,
}

pub(crate) struct Admission {
    limits: MediaLimits,
    counts: Mutex<Counts>,
}

pub(crate) struct Snapshot {
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
}

impl Admission {
    pub fn new(limits: MediaLimits) -> Self {
        Self {
            limits,
            counts: Mutex::new(Counts::default()),
        }
    }

    pub fn limits(&self) -> MediaLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock cannot leave the counts inconsistent (each update
        // is a single field write), so recovering from poisoning is safe.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `account` is who the room belongs to; `None` counts against no fair share.
    pub fn admit_publisher(
        this: &Arc<Self>,
        room: &str,
        account: Option<&str>,
    ) -> Result<PublisherSlot, AdmissionError> {
        let mut counts = this.lock();
        if counts.rooms.get(room).is_some_and(|r| r.publisher) {
            return Err(AdmissionError::RoomHasPublisher);
        }
        if counts.publishers >= this.limits.max_publishers {
            return Err(AdmissionError::TooManyPublishers {
                max: this.limits.max_publishers,
            });
        }
        if let Some(account) = account
            && counts
                .accounts
                .get(account)
                .is_some_and(|a| a.publishers >= this.limits.max_publishers_per_account)
        {
            return Err(AdmissionError::AccountPublisherLimit {
                max: this.limits.max_publishers_per_account,
            });
        }
        counts.publishers += 1;
        counts.rooms.entry(room.to_string()).or_default().publisher = true;
        if let Some(account) = account {
            counts
                .accounts
                .entry(account.to_string())
                .or_default()
                .publishers += 1;
        }
        Ok(PublisherSlot(Slot::new(this, room, account)))
    }

    pub fn admit_subscriber(
        this: &Arc<Self>,
        room: &str,
        account: Option<&str>,
    ) -> Result<SubscriberSlot, AdmissionError> {
        let mut counts = this.lock();
        if counts
            .rooms
            .get(room)
            .is_some_and(|r| r.subscribers >= this.limits.max_subscribers_per_room)
        {
            return Err(AdmissionError::TooManySubscribers {
                max: this.limits.max_subscribers_per_room,
            });
        }
        if let Some(account) = account
            && counts
                .accounts
                .get(account)
                .is_some_and(|a| a.subscribers >= this.limits.max_subscribers_per_account)
        {
            return Err(AdmissionError::AccountSubscriberLimit {
                max: this.limits.max_subscribers_per_account,
            });
        }
        counts
            .rooms
            .entry(room.to_string())
            .or_default()
            .subscribers += 1;
        if let Some(account) = account {
            counts
                .accounts
                .entry(account.to_string())
                .or_default()
                .subscribers += 1;
        }
        Ok(SubscriberSlot(Slot::new(this, room, account)))
    }

    fn release(&self, slot: &Slot, publisher: bool) {
        let mut counts = self.lock();
        if publisher {
            counts.publishers = counts.publishers.saturating_sub(1);
        }
        if let Some(entry) = counts.rooms.get_mut(&slot.room) {
            if publisher {
                entry.publisher = false;
            } else {
                entry.subscribers = entry.subscribers.saturating_sub(1);
            }
            if !entry.publisher && entry.subscribers == 0 {
                counts.rooms.remove(&slot.room);
            }
        }
        if let Some(account) = &slot.account
            && let Some(entry) = counts.accounts.get_mut(account)
        {
            if publisher {
                entry.publishers = entry.publishers.saturating_sub(1);
            } else {
                entry.subscribers = entry.subscribers.saturating_sub(1);
            }
            if entry.publishers == 0 && entry.subscribers == 0 {
                counts.accounts.remove(account);
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let counts = self.lock();
        Snapshot {
            rooms: counts.rooms.len(),
            publishers: counts.publishers as usize,
            subscribers: counts.rooms.values().map(|r| r.subscribers as usize).sum(),
        }
    }
}

/// What a slot holds: where to give it back.
struct Slot {
    admission: Arc<Admission>,
    room: String,
    account: Option<String>,
}

impl Slot {
    fn new(admission: &Arc<Admission>, room: &str, account: Option<&str>) -> Self {
        Self {
            admission: admission.clone(),
            room: room.to_string(),
            account: account.map(str::to_string),
        }
    }
}

/// Held while a publisher transport exists.
pub struct PublisherSlot(Slot);

impl Drop for PublisherSlot {
    fn drop(&mut self) {
        self.0.admission.release(&self.0, true);
    }
}

/// Held while a subscriber transport exists.
pub struct SubscriberSlot(Slot);

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.0.admission.release(&self.0, false);
    }
}

#[cfg(test)]
mod tests {
    use crate::{MediaEngine, MediaMode};

    use super::*;

    fn engine(max_publishers: u32, max_subscribers_per_room: u32) -> MediaEngine {
        MediaEngine::new(
            MediaMode::SingleServerSfu,
            MediaLimits::server_wide(max_publishers, max_subscribers_per_room),
        )
    }

    #[test]
    fn publisher_limit_is_global_and_released_on_drop() {
        let e = engine(2, 4);
        let a = e.admit_publisher(None, "a").unwrap();
        let _b = e.admit_publisher(None, "b").unwrap();
        assert_eq!(
            e.admit_publisher(None, "c").err(),
            Some(AdmissionError::TooManyPublishers { max: 2 })
        );
        assert_eq!(
            e.admit_publisher(None, "b").err(),
            Some(AdmissionError::RoomHasPublisher)
        );
        drop(a);
        assert!(e.admit_publisher(None, "c").is_ok());
    }

    #[test]
    fn subscriber_limit_is_per_room() {
        let e = engine(1, 2);
        let s1 = e.admit_subscriber(None, "a").unwrap();
        let _s2 = e.admit_subscriber(None, "a").unwrap();
        assert_eq!(
            e.admit_subscriber(None, "a").err(),
            Some(AdmissionError::TooManySubscribers { max: 2 })
        );
        let _other = e.admit_subscriber(None, "b").unwrap();
        assert_eq!(e.status().subscribers, 3);
        drop(s1);
        assert!(e.admit_subscriber(None, "a").is_ok());
    }

    #[test]
    fn empty_rooms_disappear() {
        let e = engine(1, 1);
        let p = e.admit_publisher(None, "a").unwrap();
        let s = e.admit_subscriber(None, "a").unwrap();
        assert_eq!(e.status().rooms, 1);
        drop(p);
        drop(s);
        assert_eq!(e.status().rooms, 0);
    }

    #[test]
    fn an_account_gets_its_fair_share_and_no_more() {
        let e = MediaEngine::new(
            MediaMode::SingleServerSfu,
            MediaLimits {
                max_publishers: 10,
                max_subscribers_per_room: 10,
                max_publishers_per_account: 2,
                max_subscribers_per_account: 3,
            },
        );
        let a1 = e.admit_publisher(Some("alice"), "a1").unwrap();
        let _a2 = e.admit_publisher(Some("alice"), "a2").unwrap();
        assert_eq!(
            e.admit_publisher(Some("alice"), "a3").err(),
            Some(AdmissionError::AccountPublisherLimit { max: 2 })
        );
        // Another account still gets in while Alice is at her cap.
        let _b = e.admit_publisher(Some("bob"), "b1").unwrap();
        let viewers: Vec<_> = (0..3)
            .map(|i| {
                e.admit_subscriber(Some("alice"), &format!("a{}", i % 2 + 1))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            e.admit_subscriber(Some("alice"), "a1").err(),
            Some(AdmissionError::AccountSubscriberLimit { max: 3 })
        );
        assert!(e.admit_subscriber(Some("bob"), "b1").is_ok());
        // Leaving gives the share back.
        drop(a1);
        assert!(e.admit_publisher(Some("alice"), "a3").is_ok());
        drop(viewers);
        assert!(e.admit_subscriber(Some("alice"), "a1").is_ok());
    }
}
