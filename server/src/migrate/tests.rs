//! Tests of `weft migrate` between two data directories, in process (between a directory and
//! NATS: tests/tests/migrate.rs, with a real NATS server).

use super::*;
use yrs::{Text as _, Transact as _};

fn room(id: &str) -> RoomName {
    stored_name(id).expect("a valid document id")
}

/// Appends to `doc` in `store` one update per text, each inserting it at the start of
/// `content` (as one editor typing).
fn write_texts(store: &SledStore, doc: &str, texts: &[&str]) {
    let ydoc = yrs::Doc::new();
    let content = ydoc.get_or_insert_text("content");
    for text in texts {
        let mut txn = ydoc.transact_mut();
        content.insert(&mut txn, 0, text);
        let update = txn.encode_update_v1();
        store.append(&room(doc), &update).expect("append");
    }
}

/// The text of `doc` as `store` holds it.
fn read_text(store: &dyn Store, doc: &str) -> String {
    let state = state_of(doc, store.load(&room(doc)).expect("load")).expect("merges");
    text_of(&state).expect("decodes")
}

/// A source directory: `a` with a pinned title, `b` in the trash with an automatic one, a
/// revocation for `a`.
fn source() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("open");
    write_texts(&store, "a", &["alpha text", "more "]);
    store.pin_title(&room("a"), "Pinned A").expect("pin");
    write_texts(&store, "b", &["beta"]);
    store.set_title(&room("b"), "beta").expect("title");
    store.move_to_trash(&room("b"), 1_234).expect("trash");
    store.revoke_tokens(&room("a"), 99).expect("revoke");
    store.flush().expect("flush");
    dir
}

fn args(from: &Path, to: &Path, overwrite: bool) -> MigrateArgs {
    MigrateArgs {
        from: from.display().to_string(),
        to: to.display().to_string(),
        overwrite,
    }
}

fn run(args: &MigrateArgs) -> Result<Report, MigrateError> {
    migrate(args, &NatsArgs::default(), Duration::from_secs(10))
}

/// Everything moves: content (snapshot and log merged), titles pinned or not, the trash with
/// its time, revocations; the report says so.
#[test]
fn moves_documents_titles_trash_and_revocations() {
    let from = source();
    let to = tempfile::tempdir().expect("tempdir");
    let report = run(&args(from.path(), to.path(), false)).expect("migrates");
    assert_eq!(report.moved.len(), 2);
    assert!(report.problems().is_none(), "{report}");
    let shown = report.to_string();
    assert!(
        shown.contains("moved 2 documents (") && shown.contains("1 in the trash"),
        "{shown}"
    );
    assert!(shown.contains("1 token revocation; 0 skipped"), "{shown}");
    assert!(shown.contains("\n  b  27 bytes, in trash\n"), "{shown}");

    let dest = SledStore::open(to.path()).expect("open the destination");
    assert_eq!(read_text(&dest, "a"), "more alpha text");
    assert_eq!(read_text(&dest, "b"), "beta");
    let a = dest.meta(&room("a")).expect("meta").expect("a exists");
    assert_eq!(
        (a.title.as_deref(), a.title_pinned),
        (Some("Pinned A"), true)
    );
    let b = dest.meta(&room("b")).expect("meta").expect("b exists");
    assert_eq!((b.title.as_deref(), b.title_pinned), (Some("beta"), false));
    assert_eq!(dest.trashed(&room("b")).expect("trash"), Some(1_234));
    assert_eq!(dest.trashed(&room("a")).expect("trash"), None);
    assert_eq!(dest.revocations().expect("revocations"), [("a".into(), 99)]);
}

/// Documents the destination has are skipped (and reported) without `--overwrite`, and
/// replaced with it.
#[test]
fn existing_documents_need_overwrite() {
    let from = source();
    let to = tempfile::tempdir().expect("tempdir");
    {
        let dest = SledStore::open(to.path()).expect("open");
        write_texts(&dest, "a", &["the destination's own"]);
        dest.flush().expect("flush");
    }
    let report = run(&args(from.path(), to.path(), false)).expect("runs");
    assert_eq!(report.skipped, ["a"]);
    assert_eq!(report.moved.len(), 1);
    let problems = report.problems().expect("a skip is a problem");
    assert!(problems.contains("--overwrite"), "{problems}");
    {
        let dest = SledStore::open(to.path()).expect("open");
        assert_eq!(read_text(&dest, "a"), "the destination's own");
    }
    let report = run(&args(from.path(), to.path(), true)).expect("runs");
    assert!(report.problems().is_none(), "{report}");
    assert!(report.moved.iter().all(|m| m.replaced), "{report}");
    let dest = SledStore::open(to.path()).expect("open");
    assert_eq!(read_text(&dest, "a"), "more alpha text");
}

/// A source that is not a data directory, a locked one and the same store on both sides are
/// refused with an explanation, and nothing is created in their place.
#[test]
fn bad_sources_are_refused() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let missing = scratch.path().join("missing");
    let to = scratch.path().join("to");
    let err = run(&args(&missing, &to, false)).expect_err("no such directory");
    assert!(matches!(err, MigrateError::NotADataDir { .. }), "{err}");
    assert!(!missing.exists() && !to.exists());
    let err = run(&args(scratch.path(), &to, false)).expect_err("not a data directory");
    assert!(err.to_string().contains("holds no weft database"), "{err}");

    let from = source();
    let err = run(&args(from.path(), from.path(), false)).expect_err("same store");
    assert!(matches!(err, MigrateError::SameStore(_)), "{err}");
    let _running = SledStore::open(from.path()).expect("open");
    let err = run(&args(from.path(), &to, false)).expect_err("locked");
    assert!(
        matches!(
            &err,
            MigrateError::Open {
                side: "source",
                error: StoreError::Locked { .. }
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("is locked"), "{err}");
}

/// `--from`/`--to` name NATS by their scheme; anything else is a path.
#[test]
fn locations_and_sizes_read_well() {
    assert_eq!(
        Location::parse("nats://a:4222, nats://b:4222"),
        Location::Nats(vec!["nats://a:4222".into(), "nats://b:4222".into()])
    );
    assert_eq!(
        Location::parse("./data"),
        Location::Dir(PathBuf::from("./data"))
    );
    assert!(Location::parse("nats://a,nats://b").same_as(&Location::parse("nats://b,nats://a")));
    assert!(!Location::parse("nats://a").same_as(&Location::parse("./a")));
    assert_eq!(size(812), "812 bytes");
    assert_eq!(size(3_400_000), "3.4 MB");
    assert_eq!(size(1_048_576), "1.0 MB");
    assert_eq!(size(999_990), "1.0 MB");
    assert_eq!(count(1, "token revocation"), "1 token revocation");
}
