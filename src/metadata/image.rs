//! Image references (PURE): `nginx:1.25` → name `nginx`, tag `1.25`.
//!
//! A registry host (even with a port, `registry:5000/app`) stays in the
//! name; a digest (`…@sha256:…`, or a bare `sha256:…` image id) goes to
//! the hash list, as ECS `container.image.hash.all` wants.

use crate::event::{ContainerImage, ImageHash};

/// Splits an image reference; `None` for an empty one.
pub fn split(reference: &str, extra_digest: Option<&str>) -> Option<ContainerImage> {
    let r = reference.trim();
    let mut hashes = Vec::new();
    let (rest, digest) = match r.split_once('@') {
        Some((rest, d)) => (rest, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest.filter(|d| is_digest(d)) {
        hashes.push(d.to_owned());
    }
    let (name, tag) = if digest.is_none() && is_digest(rest) {
        // A bare image id names no repository.
        hashes.push(rest.to_owned());
        (None, None)
    } else {
        // The tag is after the last ':' of the last path component, so a
        // registry port is never mistaken for one.
        let last = rest.rfind('/').map_or(0, |i| i + 1);
        match rest[last..].rfind(':') {
            Some(i) => (Some(&rest[..last + i]), Some(&rest[last + i + 1..])),
            None => (Some(rest), None),
        }
    };
    if let Some(d) = extra_digest.filter(|d| is_digest(d))
        && !hashes.iter().any(|h| h == d)
    {
        hashes.push(d.to_owned());
    }
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
    let img = ContainerImage {
        name: nonempty(name),
        tag: nonempty(tag),
        hash: (!hashes.is_empty()).then_some(ImageHash { all: hashes }),
    };
    (img != ContainerImage::default()).then_some(img)
}

/// `algorithm:hex`, as OCI digests are written.
fn is_digest(s: &str) -> bool {
    match s.split_once(':') {
        Some((alg, hex)) => {
            matches!(alg, "sha256" | "sha384" | "sha512")
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "sha256:09ffd49ca96fa37c986a944d70e92dd0234ebfe49d67f16bb8f0848603280f04";

    fn parts(r: &str) -> (Option<String>, Option<String>, Vec<String>) {
        let i = split(r, None).unwrap_or_default();
        (i.name, i.tag, i.hash.map(|h| h.all).unwrap_or_default())
    }

    #[test]
    fn name_tag_and_digest() {
        assert_eq!(
            parts("nginx:1.25"),
            (Some("nginx".into()), Some("1.25".into()), vec![])
        );
        assert_eq!(parts("nginx"), (Some("nginx".into()), None, vec![]));
        assert_eq!(
            parts("registry.local:5000/team/app"),
            (Some("registry.local:5000/team/app".into()), None, vec![])
        );
        assert_eq!(
            parts(&format!("docker.io/library/nginx:1.25@{H}")),
            (
                Some("docker.io/library/nginx".into()),
                Some("1.25".into()),
                vec![H.to_owned()]
            )
        );
        assert_eq!(parts(H), (None, None, vec![H.to_owned()]));
        assert_eq!(split("", None), None);
        assert_eq!(split("   ", None), None);
        // Junk never panics and never invents a digest.
        for junk in [":", "@", "a@b", "/:", "x:", "@sha256:zz", "a/b:c/d"] {
            let _ = split(junk, Some("sha256:"));
        }
    }

    #[test]
    fn image_id_joins_the_hashes_once() {
        let i = split("busybox:test", Some(H)).unwrap();
        assert_eq!(i.hash.unwrap().all, vec![H.to_owned()]);
        let i = split(&format!("busybox@{H}"), Some(H)).unwrap();
        assert_eq!(i.hash.unwrap().all.len(), 1);
    }
}
