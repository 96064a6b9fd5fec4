//! Media in PostgreSQL (deployments whose inbox is PostgreSQL; several
//! collectors share it): `dockline_media` (one row per medium: header,
//! complete, stored and attached times), `dockline_media_chunks` (the
//! bytes, one row per appended chunk, keyed by offset), `dockline_media_refs`,
//! `dockline_media_waits`, `dockline_media_counters`. All created with
//! `CREATE TABLE IF NOT EXISTS` in the connection's `search_path`.
//!
//! The prefix is the contiguous run of chunks from offset 0. An append
//! runs in one transaction holding the medium's row lock, so two
//! collectors handed chunks of one medium (a shared subscription) never
//! write at the same offset: the second sees [`MediaError::Moved`] and
//! resumes from the store. Chunk rows beyond `at` (never acked) are cut.
//! Like the inbox, each method runs on a current-thread runtime of its own.

use std::sync::Arc;
use std::time::Duration;

use dockline_protocol::media::{MediaHash, MediaType};
use tokio_postgres::{Client, GenericClient, NoTls};

use super::{MediaError, MediaStats, MediaStore, MediumInfo, StoredMedium};
use crate::media::MediaRef;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dockline_media(hash BYTEA PRIMARY KEY, media_type TEXT NOT NULL,
    len BIGINT NOT NULL, complete BOOLEAN NOT NULL DEFAULT FALSE, stored_ms BIGINT,
    attached_ms BIGINT);
CREATE TABLE IF NOT EXISTS dockline_media_chunks(hash BYTEA NOT NULL, off BIGINT NOT NULL,
    data BYTEA NOT NULL, PRIMARY KEY(hash, off));
CREATE TABLE IF NOT EXISTS dockline_media_refs(event TEXT NOT NULL, hash BYTEA NOT NULL,
    PRIMARY KEY(event, hash));
CREATE INDEX IF NOT EXISTS dockline_media_refs_hash ON dockline_media_refs(hash);
CREATE TABLE IF NOT EXISTS dockline_media_events(event TEXT NOT NULL, n BIGINT NOT NULL,
    hash BYTEA NOT NULL, role TEXT NOT NULL, PRIMARY KEY(event, n));
CREATE TABLE IF NOT EXISTS dockline_media_waits(event TEXT PRIMARY KEY, since_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS dockline_media_counters(name TEXT PRIMARY KEY, n BIGINT NOT NULL);
";

/// The PostgreSQL media store.
pub struct PgMediaStore {
    /// Its own runtime; `None` only while dropping (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
    config: tokio_postgres::Config,
    client: Client,
}

impl std::fmt::Debug for PgMediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMediaStore").finish_non_exhaustive()
    }
}

fn type_name(t: MediaType) -> &'static str {
    match t {
        MediaType::Png => "png",
        MediaType::Jpeg => "jpeg",
    }
}

fn type_of(name: &str) -> Result<MediaType, MediaError> {
    match name {
        "png" => Ok(MediaType::Png),
        "jpeg" => Ok(MediaType::Jpeg),
        other => Err(MediaError::Db(format!(
            "dockline_media holds unknown type {other:?}"
        ))),
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, MediaError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(
                "media store database connection closed: {e}; re-opened on the next call"
            );
        }
    });
    Ok(client)
}

/// The contiguous prefix length from `(off, len)` rows sorted by offset.
fn contiguous(rows: &[(i64, i64)]) -> (u64, usize) {
    let mut have = 0i64;
    let mut n = 0;
    for &(off, len) in rows {
        if off != have {
            break;
        }
        have += len;
        n += 1;
    }
    (have.max(0) as u64, n)
}

/// Dropped, the store's runtime shuts down without waiting: the last
/// handle may go inside async code (the collector's tasks ending at
/// shutdown), where dropping a runtime the plain way panics and aborts the
/// process. Every call already waited for its own queries.
impl Drop for PgMediaStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgMediaStore {
    /// Connects to `url` and creates the tables if missing.
    pub fn open(url: &str) -> Result<Self, MediaError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                MediaError::Db(format!(
                    "[inbox] url is not a valid PostgreSQL URL for the media store ({e})"
                ))
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MediaError::Db(format!("cannot start the media store runtime: {e}")))?;
        let client = runtime.block_on(async {
            let c = connect(&config).await?;
            c.batch_execute(SCHEMA).await?;
            Ok::<_, MediaError>(c)
        })?;
        Ok(Self {
            runtime: Some(runtime),
            config,
            client,
        })
    }

    /// Runs `f` with a live client (re-opened when the server closed it).
    fn run<R>(
        &mut self,
        f: impl AsyncFnOnce(&mut Client) -> Result<R, MediaError>,
    ) -> Result<R, MediaError> {
        let Self {
            runtime,
            config,
            client,
        } = self;
        let Some(runtime) = runtime.as_ref() else {
            return Err(MediaError::Db(
                "the media store's runtime has shut down".into(),
            ));
        };
        runtime.block_on(async {
            if client.is_closed() {
                *client = connect(config).await?;
            }
            f(client).await
        })
    }
}

async fn count<C: GenericClient>(c: &C, name: &str, n: i64) -> Result<(), MediaError> {
    c.execute(
        "INSERT INTO dockline_media_counters(name, n) VALUES ($1, $2)
         ON CONFLICT(name) DO UPDATE SET n = dockline_media_counters.n + excluded.n",
        &[&name, &n],
    )
    .await?;
    Ok(())
}

async fn read_prefix<C: GenericClient>(c: &C, key: &[u8]) -> Result<Vec<u8>, MediaError> {
    let rows = c
        .query(
            "SELECT off, data FROM dockline_media_chunks WHERE hash = $1 ORDER BY off",
            &[&key],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let off: i64 = r.get(0);
        if off != out.len() as i64 {
            break;
        }
        let data: Vec<u8> = r.get(1);
        out.extend_from_slice(&data);
    }
    Ok(out)
}

impl MediaStore for PgMediaStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn prefix(&mut self, hash: &MediaHash) -> Result<Vec<u8>, MediaError> {
        let key = hash.0.to_vec();
        self.run(async move |c| {
            let complete: Option<bool> = c
                .query_opt(
                    "SELECT complete FROM dockline_media WHERE hash = $1",
                    &[&key],
                )
                .await?
                .map(|r| r.get(0));
            if complete == Some(true) {
                return Ok(Vec::new());
            }
            read_prefix(c, &key).await
        })
    }

    fn prefix_len(&mut self, hash: &MediaHash) -> Result<u64, MediaError> {
        let key = hash.0.to_vec();
        self.run(async move |c| {
            let rows = c
                .query(
                    "SELECT off, length(data)::BIGINT FROM dockline_media_chunks
                     WHERE hash = $1 AND NOT EXISTS (SELECT 1 FROM dockline_media m
                         WHERE m.hash = $1 AND m.complete) ORDER BY off",
                    &[&key],
                )
                .await?;
            let pairs: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            Ok(contiguous(&pairs).0)
        })
    }

    fn append(
        &mut self,
        hash: &MediaHash,
        media_type: MediaType,
        len: u64,
        at: u64,
        bytes: &[u8],
    ) -> Result<(), MediaError> {
        let (h, key) = (*hash, hash.0.to_vec());
        let data = bytes.to_vec();
        self.run(async move |c| {
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO dockline_media(hash, media_type, len) VALUES ($1, $2, $3)
                 ON CONFLICT(hash) DO NOTHING",
                &[&key, &type_name(media_type), &(len as i64)],
            )
            .await?;
            let complete: bool = tx
                .query_one(
                    "SELECT complete FROM dockline_media WHERE hash = $1 FOR UPDATE",
                    &[&key],
                )
                .await?
                .get(0);
            let rows = tx
                .query(
                    "SELECT off, length(data)::BIGINT FROM dockline_media_chunks WHERE hash = $1 ORDER BY off",
                    &[&key],
                )
                .await?;
            let pairs: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let (have, _) = contiguous(&pairs);
            if complete {
                // Stored meanwhile (another sender, another collector).
                return Ok(());
            }
            if have > at {
                // Another collector appended meanwhile.
                return Err(MediaError::Moved { hash: h, have, at });
            }
            if have < at {
                tx.execute("DELETE FROM dockline_media_chunks WHERE hash = $1", &[&key])
                    .await?;
                count(&tx, "damaged", 1).await?;
                tx.commit().await?;
                return Err(MediaError::Damaged { hash: h, have, at });
            }
            let at_i = at as i64;
            tx.execute(
                "DELETE FROM dockline_media_chunks WHERE hash = $1 AND off >= $2",
                &[&key, &at_i],
            )
            .await?;
            tx.execute(
                "INSERT INTO dockline_media_chunks(hash, off, data) VALUES ($1, $2, $3)",
                &[&key, &at_i, &data],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn complete(
        &mut self,
        hash: &MediaHash,
        media_type: MediaType,
        now_ms: i64,
    ) -> Result<(), MediaError> {
        let (h, key) = (*hash, hash.0.to_vec());
        self.run(async move |c| {
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    "SELECT complete FROM dockline_media WHERE hash = $1 FOR UPDATE",
                    &[&key],
                )
                .await?;
            if row.as_ref().map(|r| r.get::<_, bool>(0)) == Some(true) {
                return Ok(());
            }
            let bytes = read_prefix(&tx, &key).await?;
            let got = MediaHash::of(&bytes);
            if got != h {
                tx.execute("DELETE FROM dockline_media_chunks WHERE hash = $1", &[&key])
                    .await?;
                tx.commit().await?;
                return Err(MediaError::HashMismatch {
                    expected: h,
                    got,
                    len: bytes.len() as u64,
                });
            }
            let len = bytes.len() as i64;
            tx.execute(
                "DELETE FROM dockline_media_chunks WHERE hash = $1 AND off >= $2",
                &[&key, &len],
            )
            .await?;
            tx.execute(
                "INSERT INTO dockline_media(hash, media_type, len, complete, stored_ms)
                 VALUES ($1, $2, $3, TRUE, $4)
                 ON CONFLICT(hash) DO UPDATE SET media_type = $2, len = $3, complete = TRUE, stored_ms = $4",
                &[&key, &type_name(media_type), &len, &now_ms],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn discard(&mut self, hash: &MediaHash) -> Result<(), MediaError> {
        let key = hash.0.to_vec();
        self.run(async move |c| {
            c.execute(
                "DELETE FROM dockline_media_chunks WHERE hash = $1 AND NOT EXISTS
                 (SELECT 1 FROM dockline_media m WHERE m.hash = $1 AND m.complete)",
                &[&key],
            )
            .await?;
            Ok(())
        })
    }

    fn get(&mut self, hash: &MediaHash) -> Result<Option<StoredMedium>, MediaError> {
        let (h, key) = (*hash, hash.0.to_vec());
        self.run(async move |c| {
            let Some(row) = c
                .query_opt(
                    "SELECT media_type FROM dockline_media WHERE hash = $1 AND complete",
                    &[&key],
                )
                .await?
            else {
                return Ok(None);
            };
            let media_type = type_of(row.get(0))?;
            let bytes = read_prefix(c, &key).await?;
            if MediaHash::of(&bytes) == h {
                return Ok(Some(StoredMedium {
                    media_type,
                    bytes: Arc::from(bytes),
                }));
            }
            let tx = c.transaction().await?;
            tx.execute("DELETE FROM dockline_media_chunks WHERE hash = $1", &[&key])
                .await?;
            tx.execute("DELETE FROM dockline_media WHERE hash = $1", &[&key])
                .await?;
            count(&tx, "damaged", 1).await?;
            tx.commit().await?;
            tracing::error!(medium = %h, "stored medium is damaged (its bytes do not hash to its name); removed, it is received again");
            Ok(None)
        })
    }

    fn info(&mut self, hash: &MediaHash) -> Result<Option<MediumInfo>, MediaError> {
        let key = hash.0.to_vec();
        self.run(async move |c| {
            let Some(r) = c
                .query_opt(
                    "SELECT media_type, len, stored_ms, attached_ms FROM dockline_media
                     WHERE hash = $1 AND complete",
                    &[&key],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(MediumInfo {
                media_type: type_of(r.get(0))?,
                len: r.get::<_, i64>(1).max(0) as u64,
                stored_ms: r.get::<_, Option<i64>>(2).unwrap_or(0),
                attached_ms: r.get(3),
            }))
        })
    }

    fn mark_attached(&mut self, hash: &MediaHash, now_ms: i64) -> Result<(), MediaError> {
        let key = hash.0.to_vec();
        self.run(async move |c| {
            c.execute(
                "UPDATE dockline_media SET attached_ms = $2 WHERE hash = $1",
                &[&key, &now_ms],
            )
            .await?;
            Ok(())
        })
    }

    fn add_refs(&mut self, event: &str, refs: &[MediaRef]) -> Result<(), MediaError> {
        let event = event.to_owned();
        let rows: Vec<(Vec<u8>, &'static str)> = refs
            .iter()
            .map(|r| (r.hash.0.to_vec(), super::role_name(r.role)))
            .collect();
        self.run(async move |c| {
            for (n, (k, role)) in rows.iter().enumerate() {
                c.execute(
                    "INSERT INTO dockline_media_refs(event, hash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&event, k],
                )
                .await?;
                c.execute(
                    "INSERT INTO dockline_media_events(event, n, hash, role) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&event, &(n as i64), k, role],
                )
                .await?;
            }
            Ok(())
        })
    }

    fn media_of_event(&mut self, event: &str) -> Result<Vec<MediaRef>, MediaError> {
        let event = event.to_owned();
        self.run(async move |c| {
            let rows = c
                .query(
                    "SELECT hash, role FROM dockline_media_events WHERE event = $1 ORDER BY n",
                    &[&event],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let key: Vec<u8> = r.get(0);
                    let hash = MediaHash(key.try_into().ok()?);
                    Some(MediaRef {
                        hash,
                        role: super::role_of(r.get(1)),
                    })
                })
                .collect())
        })
    }

    fn drop_refs(&mut self, event: &str) -> Result<(), MediaError> {
        let event = event.to_owned();
        self.run(async move |c| {
            c.execute(
                "DELETE FROM dockline_media_refs WHERE event = $1",
                &[&event],
            )
            .await?;
            c.execute(
                "DELETE FROM dockline_media_waits WHERE event = $1",
                &[&event],
            )
            .await?;
            Ok(())
        })
    }

    fn wait_since(&mut self, event: &str, now_ms: i64) -> Result<i64, MediaError> {
        let event = event.to_owned();
        self.run(async move |c| {
            c.execute(
                "INSERT INTO dockline_media_waits(event, since_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&event, &now_ms],
            )
            .await?;
            Ok(c.query_one(
                "SELECT since_ms FROM dockline_media_waits WHERE event = $1",
                &[&event],
            )
            .await?
            .get(0))
        })
    }

    fn sweep(&mut self, now_ms: i64, retain_ms: i64) -> Result<u64, MediaError> {
        let cutoff = now_ms.saturating_sub(retain_ms);
        self.run(async move |c| {
            let tx = c.transaction().await?;
            let rows = tx
                .query(
                    "DELETE FROM dockline_media m WHERE m.complete AND m.attached_ms IS NOT NULL
                     AND m.attached_ms < $1
                     AND NOT EXISTS (SELECT 1 FROM dockline_media_refs r WHERE r.hash = m.hash)
                     RETURNING hash",
                    &[&cutoff],
                )
                .await?;
            for r in &rows {
                let key: Vec<u8> = r.get(0);
                tx.execute("DELETE FROM dockline_media_chunks WHERE hash = $1", &[&key])
                    .await?;
            }
            let n = rows.len() as i64;
            if n > 0 {
                count(&tx, "swept", n).await?;
            }
            tx.commit().await?;
            Ok(n as u64)
        })
    }

    fn stats(&mut self) -> Result<MediaStats, MediaError> {
        self.run(async move |c| {
            let r = c
                .query_one(
                    "SELECT COUNT(*) FILTER (WHERE complete), COALESCE(SUM(len) FILTER (WHERE complete), 0)::BIGINT,
                            COUNT(*) FILTER (WHERE NOT complete) FROM dockline_media",
                    &[],
                )
                .await?;
            let counter = async |name: &str| -> Result<u64, MediaError> {
                let n: Option<i64> = c
                    .query_opt("SELECT n FROM dockline_media_counters WHERE name = $1", &[&name])
                    .await?
                    .map(|r| r.get(0));
                Ok(n.unwrap_or(0).max(0) as u64)
            };
            Ok(MediaStats {
                count: r.get::<_, i64>(0).max(0) as u64,
                bytes: r.get::<_, i64>(1).max(0) as u64,
                partial: r.get::<_, i64>(2).max(0) as u64,
                damaged: counter("damaged").await?,
                swept: counter("swept").await?,
            })
        })
    }
}
