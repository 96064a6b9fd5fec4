//! Proof-of-delivery media (signatures, photos) kept on the agent until a
//! media upload to the collector exists.
//!
//! | method | path | what |
//! |---|---|---|
//! | PUT | `/v1/media/{sha256}` | store an image (`image/png` or `image/jpeg`, at most [`MAX_MEDIA_BYTES`]); the path is the SHA-256 of the bytes (checked, 422 otherwise); 201 new, 200 already held |
//! | GET | `/v1/media` | what is held, each `waiting` (for an upload that does not exist yet) |
//! | GET | `/v1/media/{sha256}` | the image back |
//!
//! Events refer to media as `sha256:<hex>` (`signature_ref`, `photo_ref`).
//! Each file is `{data_dir}/media/<hex>` (folder 0700, file 0600), sealed
//! with the outbox's payload key ([`crate::outbox::keys`], the hash as
//! associated data) so a stolen handheld shows no signature or doorstep;
//! `rotate-key` re-seals them too. The plaintext is one byte for the type
//! (1 PNG, 2 JPEG) and the image.

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ApiState, error};
use crate::outbox::OutboxError;
use crate::outbox::keys::{self, Keys};

/// Largest image accepted (a photo scaled to 800 px is ~100 KB).
pub const MAX_MEDIA_BYTES: usize = 2 * 1024 * 1024;

/// The media folder and the key that seals its files.
pub struct MediaStore {
    dir: PathBuf,
    keys: Keys,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore")
            .field("dir", &self.dir)
            .finish()
    }
}

/// The media folder of a data folder.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join(keys::MEDIA_DIR)
}

fn content_type_code(ct: &str) -> Option<u8> {
    match ct.split(';').next().map(str::trim) {
        Some(t) if t.eq_ignore_ascii_case("image/png") => Some(1),
        Some(t) if t.eq_ignore_ascii_case("image/jpeg") => Some(2),
        _ => None,
    }
}

use crate::outbox::keys::is_hex_digest;

impl MediaStore {
    /// Opens (making it 0700) the media folder of `data_dir`, sealing with
    /// the outbox's key file there.
    pub fn open(data_dir: &Path) -> Result<Self, OutboxError> {
        let dir = dir_in(data_dir);
        keys::private_dir(&dir)?;
        Ok(Self {
            dir,
            keys: Keys::load_or_create(data_dir)?,
        })
    }

    /// Stores `bytes` under its hash; `Ok(false)` when it was held already.
    fn put(&self, hex: &str, code: u8, bytes: &[u8]) -> Result<bool, OutboxError> {
        let path = self.dir.join(hex);
        if path.exists() {
            return Ok(false);
        }
        let mut plain = Vec::with_capacity(bytes.len() + 1);
        plain.push(code);
        plain.extend_from_slice(bytes);
        let sealed = self.keys.seal(hex.as_bytes(), &plain)?;
        keys::write_private(&path, &sealed)?;
        Ok(true)
    }

    /// The image and its content type.
    fn get(&self, hex: &str) -> Result<Option<(&'static str, Vec<u8>)>, String> {
        let stored = match std::fs::read(self.dir.join(hex)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let plain = self.keys.open(hex.as_bytes(), &stored)?;
        let (ct, body) = match plain.split_first() {
            Some((1, body)) => ("image/png", body),
            Some((2, body)) => ("image/jpeg", body),
            _ => return Err("unknown media type byte".into()),
        };
        Ok(Some((ct, body.to_vec())))
    }

    fn list(&self) -> std::io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hex_digest(&name) {
                let size = entry
                    .metadata()?
                    .len()
                    .saturating_sub(keys::OVERHEAD as u64 + 1);
                out.push((name, size));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The media routes (state applied by [`super::router`]); their bodies may
/// be up to [`MAX_MEDIA_BYTES`].
pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/media", get(list)).route(
        "/v1/media/{hex}",
        get(fetch)
            .put(put)
            .layer(DefaultBodyLimit::max(MAX_MEDIA_BYTES)),
    )
}

async fn put(
    State(s): State<ApiState>,
    UrlPath(hex): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let store = s.media.clone();
    if !is_hex_digest(&hex) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{hex:?} is not a SHA-256 in lower-case hex; PUT the image at /v1/media/<sha256 of its bytes>"
            ),
        );
    }
    let Some(code) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(content_type_code)
    else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "media must be Content-Type: image/png or image/jpeg",
        );
    };
    let digest: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if digest != hex {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the body's SHA-256 is {digest}, not {hex}; PUT the image at its own hash"),
        );
    }
    let stored = tokio::task::spawn_blocking(move || store.put(&hex, code, &body)).await;
    match stored {
        Ok(Ok(new)) => (
            if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(json!({ "ref": format!("sha256:{digest}"), "state": "waiting" })),
        )
            .into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e}; the media was NOT stored, retry"),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "media store task failed; retry",
        ),
    }
}

async fn fetch(State(s): State<ApiState>, UrlPath(hex): UrlPath<String>) -> Response {
    let store = s.media.clone();
    if !is_hex_digest(&hex) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{hex:?} is not a SHA-256 in lower-case hex"),
        );
    }
    let shown = hex.clone();
    match tokio::task::spawn_blocking(move || store.get(&hex)).await {
        Ok(Ok(Some((ct, bytes)))) => ([(header::CONTENT_TYPE, ct)], bytes).into_response(),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("no media {shown} on this agent"),
        ),
        Ok(Err(why)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("media {shown}: {why}"),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "media read task failed; retry",
        ),
    }
}

async fn list(State(s): State<ApiState>) -> Response {
    let store = s.media.clone();
    match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(Ok(items)) => Json(json!({
            "media": items.iter().map(|(hex, bytes)| json!({
                "ref": format!("sha256:{hex}"), "bytes": bytes, "state": "waiting"
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot list media: {e}"),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "media list task failed; retry",
        ),
    }
}
