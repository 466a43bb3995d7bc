//! Who may install a model from a local repository (`POST /v1/admin/install`).
//!
//! The API listens on loopback, but loopback is not a trust boundary: any local process, and a web
//! page in a browser on the device (a cross-site `POST` with `text/plain` needs no preflight),
//! could reach it. So an install needs all of:
//! - the bearer token in `<data_dir>/admin.token` (0600, made at the first start): only the
//!   agent's own user (and root) can read it, which is what `edge-agent install` does;
//! - `Content-Type: application/json`, which a page cannot send cross-site without a preflight
//!   that this API never answers, and no `Origin` header (browsers send one, tools do not);
//! - a repository under `api.install_from`, resolved with symlinks and `..` before the check.
//!
//! The checks are plain functions over the request's parts; the handler in [`crate::api`] calls
//! them before it reads anything from disk.

use std::path::{Path, PathBuf};

/// The token file under the data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// Reads the admin token, making it (256 random bits, mode 0600) on the first start. An existing
/// file others can read is narrowed to 0600.
pub fn ensure_token(data_dir: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= 32 => {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(token.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut random = [0u8; 32];
    aws_lc_rs::rand::fill(&mut random)
        .map_err(|_| std::io::Error::other("the system random generator failed"))?;
    let token = hex::encode(random);
    std::fs::create_dir_all(data_dir)?;
    edgefleet_files::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// Why an install request was refused before anything was read from disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("requests from web pages (with an Origin header) cannot install models")]
    FromAPage,
    #[error("the body must be JSON (Content-Type: application/json)")]
    NotJson,
    #[error(
        "installs need the bearer token in {token_file} (edge-agent install reads it; run it as the agent's user or root)"
    )]
    NoToken { token_file: String },
    #[error("{repository} is not under api.install_from ({install_from}); copy or mount it there")]
    OutsideInstallDir {
        repository: String,
        install_from: String,
    },
    #[error("repository {repository}: {detail}")]
    Repository { repository: String, detail: String },
}

/// The header checks: origin, content type, token (compared in constant time).
pub fn check_headers(
    headers: &axum::http::HeaderMap,
    token: &str,
    token_file: &Path,
) -> Result<(), Refused> {
    use axum::http::header;
    if headers.contains_key(header::ORIGIN) {
        return Err(Refused::FromAPage);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refused::NotJson);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    if aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), token.as_bytes())
        .is_err()
    {
        return Err(Refused::NoToken {
            token_file: token_file.display().to_string(),
        });
    }
    Ok(())
}

/// The repository, resolved (symlinks, `..`), if it lies under `install_from`.
pub fn check_repository(repository: &Path, install_from: &Path) -> Result<PathBuf, Refused> {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p).map_err(|e| Refused::Repository {
            repository: p.display().to_string(),
            detail: e.to_string(),
        })
    };
    let resolved = resolve(repository)?;
    let allowed = resolve(install_from)?;
    if !resolved.starts_with(&allowed) {
        return Err(Refused::OutsideInstallDir {
            repository: resolved.display().to_string(),
            install_from: allowed.display().to_string(),
        });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_a_json_request_with_the_token_and_no_origin_passes() {
        let file = Path::new("/data/admin.token");
        let good = [
            (header::CONTENT_TYPE, "application/json"),
            (header::AUTHORIZATION, "Bearer s3cret-s3cret"),
        ];
        assert_eq!(
            check_headers(&headers(&good), "s3cret-s3cret", file),
            Ok(())
        );
        let cases: Vec<(Vec<(header::HeaderName, &str)>, Refused)> = vec![
            (
                vec![
                    (header::CONTENT_TYPE, "text/plain"),
                    (header::AUTHORIZATION, "Bearer s3cret-s3cret"),
                ],
                Refused::NotJson,
            ),
            (
                vec![
                    good[0].clone(),
                    good[1].clone(),
                    (header::ORIGIN, "https://evil.example"),
                ],
                Refused::FromAPage,
            ),
            (
                vec![good[0].clone()],
                Refused::NoToken {
                    token_file: "/data/admin.token".into(),
                },
            ),
            (
                vec![good[0].clone(), (header::AUTHORIZATION, "Bearer s3cret")],
                Refused::NoToken {
                    token_file: "/data/admin.token".into(),
                },
            ),
        ];
        for (h, expected) in cases {
            assert_eq!(
                check_headers(&headers(&h), "s3cret-s3cret", file),
                Err(expected)
            );
        }
    }

    #[test]
    fn a_repository_outside_the_install_dir_is_refused_even_through_dot_dot_or_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("media");
        let inside = allowed.join("usb/repo");
        let outside = dir.path().join("etc");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        assert!(check_repository(&inside, &allowed).is_ok());
        for bad in [
            outside.clone(),
            allowed.join("../etc"),
            allowed.join("link"),
        ] {
            assert!(
                matches!(
                    check_repository(&bad, &allowed),
                    Err(Refused::OutsideInstallDir { .. })
                ),
                "{}",
                bad.display()
            );
        }
    }

    #[test]
    fn the_token_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_token(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ensure_token(dir.path()).unwrap(), first);
    }
}
