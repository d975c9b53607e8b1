//! Where a session id is stored: under a keyed hash (the current secret or an earlier one) or
//! as it is; the first layout is written, the others are only read, deleted and rotated from.

use session_core::{Result, SessionKey};

use crate::config::HashedIdsConfig;
use crate::hashing::{IdHasher, HASHED_ID_LEN};

/// One way of storing ids.
#[derive(Clone)]
pub(crate) enum Layout {
    /// The id as given.
    Plain,
    /// A keyed hash of the id.
    Hashed(IdHasher),
}

/// The layouts of a store, the written one first.
#[derive(Clone)]
pub(crate) struct Layouts {
    all: Vec<Layout>,
}

impl Layouts {
    /// The layouts `config` asks for: plain ids alone when hashing is off.
    ///
    /// # Errors
    /// [`session_core::Error::Config`] for a secret that is missing, not base64 or too short.
    pub(crate) fn new(config: &HashedIdsConfig) -> Result<Self> {
        if !config.enabled {
            return Ok(Layouts {
                all: vec![Layout::Plain],
            });
        }
        if config.secret.is_empty() {
            return Err(session_core::Error::config(
                "hashed_ids.secret",
                "is required when hashed_ids.enabled (base64 of 32 random bytes: `openssl rand -base64 32`)",
            ));
        }
        let mut all = Vec::new();
        if config.write_plain_ids {
            all.push(Layout::Plain);
        }
        all.push(Layout::Hashed(IdHasher::new(
            &config.secret,
            "hashed_ids.secret",
        )?));
        for (i, secret) in config.previous_secrets.iter().enumerate() {
            let field = format!("hashed_ids.previous_secrets[{i}]");
            all.push(Layout::Hashed(IdHasher::new(secret, &field)?));
        }
        if config.read_plain_ids && !config.write_plain_ids {
            all.push(Layout::Plain);
        }
        Ok(Layouts { all })
    }

    /// Whether any layout hashes: then an id of a hashed id's length never goes to the plain
    /// layout (it could be a hash read from a dump, which the plain layout would find).
    pub(crate) fn any_hashed(&self) -> bool {
        self.all.iter().any(|l| matches!(l, Layout::Hashed(_)))
    }

    /// Refuses a key whose id has a hashed id's length when the plain layout is the written
    /// one and ids are hashed elsewhere (the first step of turning hashing on).
    ///
    /// # Errors
    /// [`session_core::Error::InvalidId`].
    pub(crate) fn check(&self, key: &SessionKey) -> Result<()> {
        if matches!(self.all.first(), Some(Layout::Plain)) && self.any_hashed() && reserved(key) {
            return Err(session_core::Error::InvalidId {
                reason: "43 characters, the length of a hashed id: reserved while ids are hashed",
            });
        }
        Ok(())
    }

    /// Keys derived from every hashing secret (the current one first) for `purpose`.
    pub(crate) fn derived_keys(&self, purpose: &[u8]) -> Vec<zeroize::Zeroizing<Vec<u8>>> {
        self.all
            .iter()
            .filter_map(|layout| match layout {
                Layout::Hashed(hasher) => Some(hasher.derive(purpose)),
                Layout::Plain => None,
            })
            .collect()
    }

    /// Whether ids are stored as hashes.
    pub(crate) fn hashes(&self) -> bool {
        matches!(self.all.first(), Some(Layout::Hashed(_)))
    }

    /// Whether any layout besides the written one is read.
    pub(crate) fn has_legacy(&self) -> bool {
        self.all.len() > 1
    }

    /// The key `key` is written under.
    pub(crate) fn written(&self, key: &SessionKey) -> SessionKey {
        match self.all.first() {
            Some(layout) => stored(layout, key),
            None => key.clone(),
        }
    }

    /// The keys `key` may be stored under besides the written one, in the order they are
    /// looked up. A plain id of a hashed id's length is skipped when ids are hashed: a hash
    /// copied from a dump never reads as a plain id.
    pub(crate) fn legacy(&self, key: &SessionKey) -> Vec<SessionKey> {
        let skip_plain = self.any_hashed() && reserved(key);
        self.all
            .iter()
            .skip(1)
            .filter(|layout| !(skip_plain && matches!(layout, Layout::Plain)))
            .map(|layout| stored(layout, key))
            .collect()
    }

    /// Every key `key` may be stored under, the written one first.
    pub(crate) fn every(&self, key: &SessionKey) -> Vec<SessionKey> {
        let mut keys = vec![self.written(key)];
        keys.extend(self.legacy(key));
        keys
    }
}

/// Whether `key`'s id has a hashed id's length (a principal index never collides: a hashed
/// index id starts with `p..`, which no principal's own index id does).
fn reserved(key: &SessionKey) -> bool {
    key.id.as_str().len() == HASHED_ID_LEN && !session_core::backend::is_principal_index(key)
}

fn stored(layout: &Layout, key: &SessionKey) -> SessionKey {
    match layout {
        Layout::Plain => key.clone(),
        Layout::Hashed(hasher) => hasher.hash(key),
    }
}
