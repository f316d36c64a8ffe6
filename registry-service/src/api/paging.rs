//! Paging for every listing: page sizes, reading one row more than the page to know whether
//! another follows, and opaque page tokens. A token is the listing's position (a row id or a
//! sequence) sealed with XChaCha20-Poly1305 under a key the registry keeps in its
//! database (shared by every replica, generated once), with the query it belongs to as
//! associated data: clients that log page tokens log no child data, and a token replayed against
//! another query, altered or made up is refused.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    KeyInit as _, XChaCha20Poly1305, XNonce,
    aead::{Aead as _, AeadCore as _, OsRng, Payload},
};
use cpis_core::{nhs_number::NhsNumber, ods::OdsCode};
use cpis_proto::cpis::common::v1::ErrorReason;
use tokio::sync::OnceCell;

use crate::clock::Clock;
use crate::db::{Database, keys};
use crate::error::RegistryError;

/// Page size when the request says 0.
const DEFAULT_PAGE: i64 = 100;
/// Largest page; larger requests are treated as this.
const MAX_PAGE: i64 = 1000;
/// The name of the page-token key in `registry_keys`.
const KEY_NAME: &str = "page-token-v1";
/// Token format version, sealed inside.
const VERSION: u8 = 1;
/// XChaCha20's nonce length.
const NONCE_LEN: usize = 24;

/// The page size a request asks for: 0 means the default; above the maximum, the maximum.
pub(crate) fn page_size(requested: i32) -> Result<i64, RegistryError> {
    match i64::from(requested) {
        n if n < 0 => Err(RegistryError::invalid(
            "page_size",
            ErrorReason::FieldFormat,
            "must not be negative",
        )),
        0 => Ok(DEFAULT_PAGE),
        n => Ok(n.min(MAX_PAGE)),
    }
}

/// One page of a listing.
#[derive(Debug)]
pub(crate) struct Page<T> {
    /// The items that decoded.
    pub items: Vec<T>,
    /// Whether another page follows.
    pub more: bool,
    /// The position of the page's last row (decoded or not): where the next page starts.
    pub last: Option<i64>,
}

/// The page in rows read with `limit + 1`, each with its position. Rows that did not decode
/// (`None`) still count and still move the cursor, so a corrupt row neither ends a listing early
/// nor traps it.
pub(crate) fn split_page<T>(mut rows: Vec<(i64, Option<T>)>, limit: i64) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    Page {
        last: rows.last().map(|(position, _)| *position),
        items: rows.into_iter().filter_map(|(_, item)| item).collect(),
        more,
    }
}

/// The query a page token belongs to. It is sealed in as associated data (never in the token):
/// a token opens only for the same listing, by the same council, of the same child.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Query<'a> {
    /// ListChildRecords with its state filter.
    Records {
        /// The council listing.
        council: &'a OdsCode,
        /// The state filter, as sent.
        state: i32,
    },
    /// ListAccessEvents of one NHS number.
    AccessEvents {
        /// The council listing.
        council: &'a OdsCode,
        /// Whose history.
        nhs_number: &'a NhsNumber,
    },
    /// ListNotifications.
    Notifications {
        /// The council listing.
        council: &'a OdsCode,
    },
    /// ListBatchRejections of one batch.
    BatchRejections {
        /// The council listing.
        council: &'a OdsCode,
        /// Which batch.
        batch_id: &'a str,
    },
    /// ListSecurityEvents (operators: every event, no council).
    SecurityEvents,
}

impl Query<'_> {
    /// Associated data binding a token to its query.
    fn bind(self) -> Vec<u8> {
        let (kind, council, filter, subject) = match self {
            Self::Records { council, state } => (1u8, Some(council), state, None),
            Self::AccessEvents {
                council,
                nhs_number,
            } => (2, Some(council), 0, Some(nhs_number.to_string())),
            Self::Notifications { council } => (3, Some(council), 0, None),
            Self::BatchRejections { council, batch_id } => {
                (4, Some(council), 0, Some(batch_id.to_owned()))
            }
            Self::SecurityEvents => (5, None, 0, None),
        };
        let mut bound = vec![VERSION, kind];
        bound.extend_from_slice(&filter.to_be_bytes());
        bound.extend_from_slice(council.map_or("", OdsCode::as_str).as_bytes());
        bound.push(0);
        if let Some(subject) = subject {
            bound.extend_from_slice(subject.as_bytes());
        }
        bound
    }
}

/// Seals and opens page tokens.
pub(crate) struct PageTokens {
    db: Database,
    clock: Clock,
    cipher: OnceCell<XChaCha20Poly1305>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PageTokens")
            .field("keyed", &self.cipher.initialized())
            .finish()
    }
}

impl PageTokens {
    /// Tokens keyed by the registry's stored key, read (or made) on first use.
    pub fn new(db: Database, clock: Clock) -> Self {
        Self {
            db,
            clock,
            cipher: OnceCell::new(),
        }
    }

    async fn cipher(&self) -> Result<&XChaCha20Poly1305, RegistryError> {
        self.cipher
            .get_or_try_init(|| async {
                let now = self.clock.now_micros();
                let key = self
                    .db
                    .run(move |conn| {
                        keys::get_or_create(
                            conn,
                            KEY_NAME,
                            || XChaCha20Poly1305::generate_key(&mut OsRng).to_vec(),
                            now,
                        )
                    })
                    .await?;
                XChaCha20Poly1305::new_from_slice(&key)
                    .map_err(|_| RegistryError::corrupt("registry_keys", KEY_NAME))
            })
            .await
    }

    /// The token for the page after `page` of `query`; empty when no page follows.
    pub async fn next<T>(&self, query: Query<'_>, page: &Page<T>) -> Result<String, RegistryError> {
        let (true, Some(position)) = (page.more, page.last) else {
            return Ok(String::new());
        };
        let cipher = self.cipher().await?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &position.to_be_bytes(),
                    aad: &query.bind(),
                },
            )
            .map_err(|_| RegistryError::Internal("page token sealing failed".into()))?;
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(token))
    }

    /// The position a token of `query` carries; `None` for an empty token (the first page).
    pub async fn open(&self, query: Query<'_>, token: &str) -> Result<Option<i64>, RegistryError> {
        if token.is_empty() {
            return Ok(None);
        }
        // Bounded before decoding: a real token is 64 characters.
        if token.len() > 128 {
            return Err(RegistryError::bad_page_token());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| RegistryError::bad_page_token())?;
        if bytes.len() <= NONCE_LEN {
            return Err(RegistryError::bad_page_token());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| RegistryError::bad_page_token())?;
        let opened = self
            .cipher()
            .await?
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &query.bind(),
                },
            )
            .map_err(|_| RegistryError::bad_page_token())?;
        let position: [u8; 8] = opened
            .try_into()
            .map_err(|_| RegistryError::bad_page_token())?;
        Ok(Some(i64::from_be_bytes(position)))
    }
}
