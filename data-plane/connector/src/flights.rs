//! Identical upstream requests in flight at once become one: the first caller (the leader) asks the
//! API, later callers with the same credential and request wait for its answer instead of spending
//! quota and a round trip of their own. Keyed by the credential, not the tenant: tenants that share a
//! credential see the same data upstream, so sharing an answer in flight shows none of them anything
//! it could not fetch itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlightKey {
    pub credential: u64,
    /// Method, URL, sorted query parameters and body.
    pub request: String,
}

/// An answer as it landed: what a follower needs to read it as its own.
#[derive(Debug, Clone)]
pub struct Landed {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
    pub fetched_wall: SystemTime,
}

type Slot = watch::Receiver<Option<Landed>>;

#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<FlightKey, Slot>>,
}

/// What a caller is for one request.
pub enum Role {
    /// Ask the API, then [`Lead::land`] the answer.
    Leader(Lead),
    /// Wait for the leader with [`follow`].
    Follower(Slot),
}

/// The leader's side. Dropped without landing (an error, a cancelled query), it lets its followers go
/// upstream themselves.
pub struct Lead {
    flights: Arc<Flights>,
    key: FlightKey,
    tx: watch::Sender<Option<Landed>>,
}

impl Flights {
    pub fn new() -> Arc<Self> {
        Arc::new(Flights::default())
    }

    pub fn join(self: &Arc<Self>, key: FlightKey) -> Role {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(&key) {
            // A leader that went away without an answer leaves a closed slot: take its place.
            if rx.has_changed().is_ok() {
                return Role::Follower(rx.clone());
            }
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Role::Leader(Lead { flights: self.clone(), key, tx })
    }

    /// Whether a request is in flight (a refresh need not start another).
    pub fn in_flight(&self, key: &FlightKey) -> bool {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).is_some_and(|rx| rx.has_changed().is_ok())
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Lead {
    pub fn land(self, landed: Landed) {
        let _ = self.tx.send(Some(landed));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.key).is_some_and(|rx| rx.same_channel(&self.tx.subscribe())) {
            map.remove(&self.key);
        }
    }
}

/// The leader's answer, or `None` if it gave up without one.
pub async fn follow(mut slot: Slot) -> Option<Landed> {
    match slot.wait_for(Option::is_some).await {
        Ok(landed) => landed.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlightKey {
        FlightKey { credential: 7, request: "GET /x".into() }
    }

    fn landed(body: &'static str) -> Landed {
        Landed {
            status: reqwest::StatusCode::OK,
            headers: Default::default(),
            body: bytes::Bytes::from_static(body.as_bytes()),
            fetched_wall: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn followers_get_the_leaders_answer_and_the_flight_ends_with_it() {
        let flights = Flights::new();
        let Role::Leader(lead) = flights.join(key()) else { panic!("first is the leader") };
        let Role::Follower(a) = flights.join(key()) else { panic!("second follows") };
        let Role::Follower(b) = flights.join(key()) else { panic!("third follows") };
        let other = FlightKey { credential: 8, ..key() };
        assert!(matches!(flights.join(other), Role::Leader(_)), "another credential flies alone");
        let waiting = tokio::spawn(async move { (follow(a).await, follow(b).await) });
        lead.land(landed("{}"));
        let (a, b) = waiting.await.unwrap();
        assert_eq!(a.unwrap().body, "{}");
        assert_eq!(b.unwrap().body, "{}");
        assert!(flights.is_empty());
        assert!(matches!(flights.join(key()), Role::Leader(_)), "the next request after landing goes upstream");
    }

    #[tokio::test]
    async fn a_leader_that_gives_up_releases_its_followers() {
        let flights = Flights::new();
        let Role::Leader(lead) = flights.join(key()) else { panic!() };
        let Role::Follower(f) = flights.join(key()) else { panic!() };
        drop(lead);
        assert!(follow(f).await.is_none());
        assert!(matches!(flights.join(key()), Role::Leader(_)));
    }
}
