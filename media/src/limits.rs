//! Admission control for `MEDIA_MAX_PUBLISHERS` and `MEDIA_MAX_SUBSCRIBERS_PER_ROOM`.
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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    #[error("the server already has its maximum of {max} live publishers")]
    TooManyPublishers { max: u32 },
    #[error("this stream already has a publisher")]
    RoomHasPublisher,
    #[error("this stream already has its maximum of {max} viewers")]
    TooManySubscribers { max: u32 },
}

#[derive(Default)]
struct RoomCount {
    publisher: bool,
    subscribers: u32,
}

#[derive(Default)]
struct Counts {
    publishers: u32,
    rooms: HashMap<String, RoomCount>,
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

    pub fn admit_publisher(this: &Arc<Self>, room: &str) -> Result<PublisherSlot, AdmissionError> {
        let mut counts = this.lock();
        if counts.rooms.get(room).is_some_and(|r| r.publisher) {
            return Err(AdmissionError::RoomHasPublisher);
        }
        if counts.publishers >= this.limits.max_publishers {
            return Err(AdmissionError::TooManyPublishers {
                max: this.limits.max_publishers,
            });
        }
        counts.publishers += 1;
        counts.rooms.entry(room.to_string()).or_default().publisher = true;
        Ok(PublisherSlot {
            admission: this.clone(),
            room: room.to_string(),
        })
    }

    pub fn admit_subscriber(
        this: &Arc<Self>,
        room: &str,
    ) -> Result<SubscriberSlot, AdmissionError> {
        let mut counts = this.lock();
        let entry = counts.rooms.entry(room.to_string()).or_default();
        if entry.subscribers >= this.limits.max_subscribers_per_room {
            return Err(AdmissionError::TooManySubscribers {
                max: this.limits.max_subscribers_per_room,
            });
        }
        entry.subscribers += 1;
        Ok(SubscriberSlot {
            admission: this.clone(),
            room: room.to_string(),
        })
    }

    fn release(&self, room: &str, publisher: bool) {
        let mut counts = self.lock();
        if publisher {
            counts.publishers = counts.publishers.saturating_sub(1);
        }
        if let Some(entry) = counts.rooms.get_mut(room) {
            if publisher {
                entry.publisher = false;
            } else {
                entry.subscribers = entry.subscribers.saturating_sub(1);
            }
            if !entry.publisher && entry.subscribers == 0 {
                counts.rooms.remove(room);
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

/// Held while a publisher transport exists.
pub struct PublisherSlot {
    admission: Arc<Admission>,
    room: String,
}

impl Drop for PublisherSlot {
    fn drop(&mut self) {
        self.admission.release(&self.room, true);
    }
}

/// Held while a subscriber transport exists.
pub struct SubscriberSlot {
    admission: Arc<Admission>,
    room: String,
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.admission.release(&self.room, false);
    }
}

#[cfg(test)]
mod tests {
    use crate::{MediaEngine, MediaMode};

    use super::*;

    fn engine(max_publishers: u32, max_subscribers_per_room: u32) -> MediaEngine {
        MediaEngine::new(
            MediaMode::SingleServerSfu,
            MediaLimits {
                max_publishers,
                max_subscribers_per_room,
            },
        )
    }

    #[test]
    fn publisher_limit_is_global_and_released_on_drop() {
        let e = engine(2, 4);
        let a = e.admit_publisher("a").unwrap();
        let _b = e.admit_publisher("b").unwrap();
        assert_eq!(
            e.admit_publisher("c").err(),
            Some(AdmissionError::TooManyPublishers { max: 2 })
        );
        assert_eq!(
            e.admit_publisher("b").err(),
            Some(AdmissionError::RoomHasPublisher)
        );
        drop(a);
        assert!(e.admit_publisher("c").is_ok());
    }

    #[test]
    fn subscriber_limit_is_per_room() {
        let e = engine(1, 2);
        let s1 = e.admit_subscriber("a").unwrap();
        let _s2 = e.admit_subscriber("a").unwrap();
        assert_eq!(
            e.admit_subscriber("a").err(),
            Some(AdmissionError::TooManySubscribers { max: 2 })
        );
        let _other = e.admit_subscriber("b").unwrap();
        assert_eq!(e.status().subscribers, 3);
        drop(s1);
        assert!(e.admit_subscriber("a").is_ok());
    }

    #[test]
    fn empty_rooms_disappear() {
        let e = engine(1, 1);
        let p = e.admit_publisher("a").unwrap();
        let s = e.admit_subscriber("a").unwrap();
        assert_eq!(e.status().rooms, 1);
        drop(p);
        drop(s);
        assert_eq!(e.status().rooms, 0);
    }
}
