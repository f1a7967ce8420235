use super::*;
use std::fs;

fn owner() -> ObjectRef {
    ObjectRef::new(
        "source.toolkit.fluxcd.io",
        "GitRepository",
        "flux-system",
        "fleet",
    )
}

fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("apps/base")).unwrap();
    fs::write(d.path().join("apps/base/deploy.yaml"), "kind: Deployment\n").unwrap();
    fs::write(d.path().join("README.md"), "hello\n").unwrap();
    fs::create_dir_all(d.path().join(".git")).unwrap();
    fs::write(d.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    d
}

/// Builds a tar.gz whose single entry has a raw name that `tar::Builder` would refuse.
fn raw_archive(name: &str, entry_type: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(entry_type);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut raw = Vec::new();
    raw.extend_from_slice(h.as_bytes());
    raw.extend_from_slice(data);
    raw.resize(raw.len().div_ceil(512) * 512 + 1024, 0);
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap()
}

#[test]
fn archives_are_deterministic_and_content_addressed() {
    let src = tree();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(store_dir.path()).unwrap();
    let no_git = |p: &str, _| p == ".git" || p.starts_with(".git/");
    let a = store
        .archive_dir(&owner(), src.path(), "main@sha1:1111", &no_git)
        .unwrap();
    // Touching files does not change the digest: times are not archived.
    fs::write(src.path().join("README.md"), "hello\n").unwrap();
    let b = store
        .archive_dir(&owner(), src.path(), "main@sha1:2222", &no_git)
        .unwrap();
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.path, b.path);
    assert!(a.digest.starts_with("sha256:") && a.digest.len() == 71);
    assert!(a.path.starts_with("gitrepository/flux-system/fleet/"));
    assert!(store.contains(&a));

    let out = store.unpacked(&a).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("apps/base/deploy.yaml")).unwrap(),
        "kind: Deployment\n"
    );
    assert!(
        !out.join(".git").exists(),
        "filtered paths are not archived"
    );
    // A second call reuses the extraction.
    assert_eq!(store.unpacked(&a).unwrap(), out);

    fs::write(src.path().join("README.md"), "changed\n").unwrap();
    let c = store
        .archive_dir(&owner(), src.path(), "main@sha1:3333", &no_git)
        .unwrap();
    assert_ne!(a.digest, c.digest);
}

#[test]
fn tampered_archives_are_refused() {
    let src = tree();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(store_dir.path()).unwrap();
    let a = store
        .archive_dir(&owner(), src.path(), "r", &keep_all)
        .unwrap();
    fs::write(store.path_of(&a), b"not the archive").unwrap();
    let err = store.unpacked(&a).unwrap_err();
    assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");
}

#[test]
fn extraction_rejects_traversal_absolute_paths_and_escaping_links() {
    let cases = [
        (
            raw_archive("../evil.yaml", tar::EntryType::Regular, None, b"x"),
            "escapes the destination",
        ),
        (
            raw_archive("a/../../evil.yaml", tar::EntryType::Regular, None, b"x"),
            "escapes the destination",
        ),
        (
            raw_archive("/etc/evil.yaml", tar::EntryType::Regular, None, b"x"),
            "absolute path",
        ),
        (
            raw_archive("link", tar::EntryType::Symlink, Some("../../outside"), b""),
            "points outside",
        ),
        (
            raw_archive(
                "abs-link",
                tar::EntryType::Symlink,
                Some("/etc/passwd"),
                b"",
            ),
            "points outside",
        ),
        (
            raw_archive("hard", tar::EntryType::Link, Some("x"), b""),
            "hard link",
        ),
        (
            raw_archive("dev", tar::EntryType::Char, None, b""),
            "special file",
        ),
    ];
    for (bytes, expected) in cases {
        let dest = tempfile::tempdir().unwrap();
        let err = extract(&bytes[..], dest.path(), "evil.tar.gz", &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected `{expected}` in `{err}`");
        assert!(err.starts_with("archive evil.tar.gz: entry"), "{err}");
    }
}

#[test]
fn oversized_archives_are_refused() {
    let big = vec![b'a'; 4 << 20];
    let bytes = raw_archive("big.bin", tar::EntryType::Regular, None, &big);
    let dest = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = extract(&bytes[..], dest.path(), "big.tar.gz", &limits).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::TooLarge {
                what: "unpacked",
                ..
            }
        ),
        "{err}"
    );

    let limits = Limits {
        max_archive_bytes: 64,
        ..Limits::default()
    };
    let err = extract(&bytes[..], dest.path(), "big.tar.gz", &limits).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::TooLarge {
                what: "compressed",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("limit of 64 bytes"), "{err}");
}

#[test]
fn links_inside_the_tree_survive_a_round_trip() {
    let src = tree();
    std::os::unix::fs::symlink("base/deploy.yaml", src.path().join("apps/link.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.path().join("apps/outside.yaml")).unwrap();
    let bytes = pack_dir(src.path(), &keep_all).unwrap();
    let dest = tempfile::tempdir().unwrap();
    extract(&bytes[..], dest.path(), "t", &Limits::default()).unwrap();
    assert_eq!(
        fs::read_to_string(dest.path().join("apps/link.yaml")).unwrap(),
        "kind: Deployment\n"
    );
    assert!(
        !dest.path().join("apps/outside.yaml").exists(),
        "escaping links are not archived"
    );
}

#[test]
fn garbage_collection_keeps_the_newest_and_the_one_in_use() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(store_dir.path()).unwrap().with_keep(2);
    let src = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for i in 0..5 {
        fs::write(src.path().join("f"), format!("{i}")).unwrap();
        all.push(
            store
                .archive_dir(&owner(), src.path(), &format!("r{i}"), &keep_all)
                .unwrap(),
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    store.unpacked(&all[0]).unwrap();
    let removed = store.gc(&owner(), &all[0]).unwrap();
    assert_eq!(removed, 2);
    assert!(store.contains(&all[0]) && store.contains(&all[4]) && store.contains(&all[3]));
    assert!(!store.contains(&all[1]) && !store.contains(&all[2]));
}
