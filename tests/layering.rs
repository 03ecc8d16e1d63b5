//! The shape of `src/`: every module belongs to a layer and may only import from its own
//! layer or the ones below it; a domain's routes never import another domain's routes; and
//! no two modules import each other, directly or through others.
//!
//! Top to bottom:
//!
//! * **app** (`lib.rs`, `app`): assembles routers and runs the server.
//! * **adapters**: `*::routes`, `*::extract` (request principals), `realtime::socket`,
//!   `media_api`, `admin`, `pages`, `openapi`, `health`, `jobs`, `cli`.
//! * **domain**: the other files of `auth`, `devices`, `links`, `commands`, `events`,
//!   `streams`, `videos` (`service`, `model`, ...).
//! * **infrastructure**: `state`, `db`, `storage` (but its routes), `http`, `realtime` (but
//!   its socket handlers), `watchtogether` (but its routes), `time`, `error`, `config`,
//!   `pagination`, `crypto`, `allocator`.
//!
//! The scan reads `crate::…` paths (grouped `use` trees included), `super::…` paths, names
//! a `use crate::…` brings into scope when they are modules (`use crate::streams;` then
//! `streams::routes::…`), and `#[macro_export]` macros (`crate::db_execute!` belongs to
//! `db`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Infrastructure,
    Domain,
    Adapter,
    App,
}

const DOMAINS: &[&str] = &[
    "auth",
    "devices",
    "links",
    "commands",
    "events",
    "streams",
    "videos",
    "recordings",
    "oauth",
    "tmdb",
];
const INFRASTRUCTURE: &[&str] = &[
    "state",
    "db",
    "storage",
    "http",
    "realtime",
    "time",
    "error",
    "config",
    "pagination",
    "crypto",
    "watchtogether",
    "upstream",
    "recording_runtime",
    "allocator",
    "keyed_lock",
];
const ADAPTERS: &[&str] = &[
    "media_api",
    "admin",
    "pages",
    "openapi",
    "health",
    "jobs",
    "cli",
];

/// `None` for a module nobody has placed yet: the test then fails and asks for a decision.
fn layer_of(module: &[String]) -> Option<Layer> {
    let first = module.first().map(String::as_str);
    let last = module.last().map(String::as_str);
    match (first, module.len()) {
        (None, _) | (Some("app" | "main"), 1) => return Some(Layer::App),
        _ => {}
    }
    let first = first?;
    if module == ["storage", "routes"]
        || module == ["realtime", "socket"]
        || module == ["watchtogether", "routes"]
    {
        return Some(Layer::Adapter);
    }
    if INFRASTRUCTURE.contains(&first) {
        return Some(Layer::Infrastructure);
    }
    if ADAPTERS.contains(&first) {
        return Some(Layer::Adapter);
    }
    if DOMAINS.contains(&first) {
        return Some(match last {
            Some("routes" | "extract") => Layer::Adapter,
            _ => Layer::Domain,
        });
    }
    None
}

fn is_routes(module: &[String]) -> bool {
    module.len() == 2 && module[1] == "routes"
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/lib.rs` → the crate root.
fn module_of(relative: &str) -> Vec<String> {
    let trimmed = relative.trim_end_matches(".rs");
    let mut parts: Vec<String> = trimmed.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Source without comment lines (doc links are not imports) and without `//` comments that
/// follow code.
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| match l.find(" // ") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Expands the use tree at `s[i..]` (after `crate::`) into full paths; returns where it ends.
fn expand(s: &[u8], i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let i = skip_ws(s, i);
    if i < s.len() && s[i] == b'{' {
        let mut j = i + 1;
        loop {
            j = skip_ws(s, j);
            if j >= s.len() {
                return j;
            }
            match s[j] {
                b'}' => return j + 1,
                b',' => j += 1,
                _ => {
                    let before = j;
                    j = expand(s, j, prefix, out);
                    if j == before {
                        // Something that is no path (a glob, a stray token): step over it.
                        j += 1;
                    }
                }
            }
        }
    }
    let (ident, mut j) = ident_at(s, i);
    if ident.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix.to_vec());
        }
        return i;
    }
    let mut path = prefix.to_vec();
    if ident != "self" {
        path.push(ident);
    }
    if s[j..].starts_with(b"::") {
        j = expand(s, j + 2, &path, out);
    } else {
        out.push(path);
    }
    j
}

/// Every path `source` names through `crate::` (or `super::`, resolved against `module`).
fn crate_paths(module: &[String], is_mod_rs: bool, source: &str) -> Vec<Vec<String>> {
    let s = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_');
        if boundary && s[i..].starts_with(b"crate::") {
            i = expand(s, i + "crate::".len(), &[], &mut out);
        } else if boundary && s[i..].starts_with(b"super::") {
            // In `a/b.rs` (module `a::b`) `super` is `a`; in `a/mod.rs` (module `a`) it is the root.
            let mut parent = module.to_vec();
            parent.pop();
            if is_mod_rs {
                parent.pop();
            }
            i = expand(s, i + "super::".len(), &parent, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// The longest prefix of `path` that is a module of the crate (or the module defining a
/// `#[macro_export]` macro).
fn resolve(
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
    macros: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    if let Some(first) = path.first()
        && let Some(home) = macros.get(first)
    {
        return Some(home.clone());
    }
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

fn exported_macros(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut exported = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[macro_export]") {
            exported = true;
        } else if exported && let Some(rest) = line.strip_prefix("macro_rules!") {
            let name: String = rest
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
            exported = false;
        }
    }
    names
}

/// What every file imports: `(file, module) → [(written path, resolved module)]`.
type Edges = BTreeMap<(String, Vec<String>), Vec<(String, Vec<String>)>>;

fn edges(files: &[(String, String)]) -> Edges {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(f, _)| module_of(f)).collect();
    let macros: BTreeMap<String, Vec<String>> = files
        .iter()
        .flat_map(|(f, src)| {
            exported_macros(src)
                .into_iter()
                .map(move |m| (m, module_of(f)))
        })
        .collect();
    let mut all = Edges::new();
    for (file, source) in files {
        let module = module_of(file);
        let source = strip_comments(source);
        let mut paths = crate_paths(&module, file.ends_with("mod.rs"), &source);
        // Modules a `use` brought into scope are followed through their local name.
        let aliases: BTreeMap<String, Vec<String>> = paths
            .iter()
            .filter(|p| modules.contains(*p))
            .filter_map(|p| Some((p.last()?.clone(), p.clone())))
            .collect();
        let bytes = source.as_bytes();
        for (alias, target) in &aliases {
            let needle = format!("{alias}::");
            let mut from = 0;
            while let Some(at) = source[from..].find(&needle) {
                let at = from + at;
                let boundary = at == 0
                    || !(bytes[at - 1].is_ascii_alphanumeric()
                        || bytes[at - 1] == b'_'
                        || bytes[at - 1] == b':');
                if boundary {
                    expand(bytes, at + needle.len(), target, &mut paths);
                }
                from = at + needle.len();
            }
        }
        let entry = all.entry((file.clone(), module.clone())).or_default();
        for path in paths {
            if let Some(target) = resolve(&path, &modules, &macros)
                && target != module
            {
                entry.push((format!("crate::{}", path.join("::")), target));
            }
        }
    }
    all
}

/// Every breach of the rules, one line each naming the file and the import.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut found = BTreeSet::new();
    let all = edges(files);
    for ((file, module), imports) in &all {
        let Some(own) = layer_of(module) else {
            found.insert(format!(
                "src/{file}: module `{}` has no layer; add it to tests/layering.rs",
                module.join("::")
            ));
            continue;
        };
        for (written, target) in imports {
            let Some(theirs) = layer_of(target) else {
                continue;
            };
            if theirs > own {
                found.insert(format!(
                    "src/{file} ({own:?}) imports `{written}` from a higher layer ({theirs:?})"
                ));
            }
            if is_routes(module) && is_routes(target) && module[0] != target[0] {
                found.insert(format!(
                    "src/{file} imports `{written}`: routes must not import another domain's routes"
                ));
            }
        }
    }
    for cycle in cycles(&all) {
        found.insert(format!("module cycle: {cycle}"));
    }
    found.into_iter().collect()
}

/// Import cycles between modules, each shown as `a → b → a`.
fn cycles(all: &Edges) -> Vec<String> {
    let graph: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = all
        .iter()
        .map(|((_, m), imports)| (m, imports.iter().map(|(_, t)| t).collect()))
        .collect();
    let mut found = Vec::new();
    for start in graph.keys() {
        // Depth-first search for a path back to `start` through modules sorted after it, so
        // each cycle is reported once (from its smallest module).
        let mut stack = vec![(*start, vec![*start])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(node).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = path.iter().map(|m| m.join("::")).collect();
                    found.push(format!("{} → {}", names.join(" → "), start.join("::")));
                } else if *next > *start && seen.insert(*next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
    }
    found
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("readable src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((
                relative,
                std::fs::read_to_string(&path).expect("utf-8 source"),
            ));
        }
    }
}

#[test]
fn src_imports_only_point_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&root, &root, &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "layering violations:\n{}",
        found.join("\n")
    );
}

fn synthetic(files: &[(&str, &str)]) -> Vec<String> {
    let mut all: Vec<(String, String)> = [
        "lib.rs",
        "app.rs",
        "state.rs",
        "error.rs",
        "db/mod.rs",
        "http/mod.rs",
        "http/csrf.rs",
        "auth/mod.rs",
        "auth/extract.rs",
        "devices/mod.rs",
        "devices/model.rs",
        "devices/routes.rs",
        "devices/service.rs",
        "links/mod.rs",
        "links/routes.rs",
        "links/service.rs",
        "commands/mod.rs",
        "commands/routes.rs",
        "commands/service.rs",
    ]
    .iter()
    .map(|f| (f.to_string(), String::new()))
    .collect();
    for (file, source) in files {
        match all.iter_mut().find(|(f, _)| f == file) {
            Some(entry) => entry.1 = source.to_string(),
            None => all.push((file.to_string(), source.to_string())),
        }
    }
    violations(&all)
}

#[test]
fn a_clean_tree_passes() {
    let found = synthetic(&[
        (
            "app.rs",
            "use crate::{devices, links::routes};\nuse crate::state::AppState;",
        ),
        (
            "links/routes.rs",
            "use crate::links::service;\nuse crate::devices::service::find_for_user;\nuse crate::error::ApiError;",
        ),
        (
            "links/service.rs",
            "use crate::db::Db;\nuse crate::devices::model::Device;",
        ),
        ("db/mod.rs", "macro_rules! unrelated {}"),
        ("state.rs", "use crate::db::Db;"),
        (
            "http/csrf.rs",
            "// A comment naming crate::auth::extract is no import.\nuse crate::state::AppState;",
        ),
    ]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn an_import_from_a_higher_layer_is_reported() {
    let found = synthetic(&[(
        "http/csrf.rs",
        "use crate::auth::extract::ClientIp;\nuse crate::error::ApiError;",
    )]);
    assert_eq!(
        found,
        [
            "src/http/csrf.rs (Infrastructure) imports `crate::auth::extract::ClientIp` from a higher layer (Adapter)"
        ]
    );
    let found = synthetic(&[("state.rs", "use crate::app::JSON_BODY_LIMIT;")]);
    assert_eq!(
        found,
        [
            "src/state.rs (Infrastructure) imports `crate::app::JSON_BODY_LIMIT` from a higher layer (App)"
        ]
    );
}

#[test]
fn grouped_aliased_and_macro_imports_are_seen() {
    // A grouped use tree.
    let found = synthetic(&[(
        "devices/service.rs",
        "use crate::{db::Db, links::{routes::Body, service}};",
    )]);
    assert_eq!(
        found,
        [
            "src/devices/service.rs (Domain) imports `crate::links::routes::Body` from a higher layer (Adapter)"
        ]
    );
    // A module brought into scope, then used through its name.
    let found = synthetic(&[(
        "commands/service.rs",
        "use crate::links;\nfn f() { links::routes::router(); }",
    )]);
    assert_eq!(
        found,
        [
            "src/commands/service.rs (Domain) imports `crate::links::routes::router` from a higher layer (Adapter)"
        ]
    );
    // An exported macro belongs to the module that defines it.
    let found = synthetic(&[
        (
            "commands/routes.rs",
            "#[macro_export]\nmacro_rules! helper { () => {} }",
        ),
        ("commands/service.rs", "fn f() { crate::helper!(); }"),
    ]);
    assert_eq!(
        found,
        ["src/commands/service.rs (Domain) imports `crate::helper` from a higher layer (Adapter)"]
    );
}

#[test]
fn routes_importing_another_domains_routes_are_reported() {
    let found = synthetic(&[("links/routes.rs", "use crate::devices::routes::OkBody;")]);
    assert_eq!(
        found,
        [
            "src/links/routes.rs imports `crate::devices::routes::OkBody`: routes must not import another domain's routes"
        ]
    );
}

#[test]
fn cycles_are_reported() {
    let found = synthetic(&[
        ("links/service.rs", "use crate::devices::service::IdRow;"),
        (
            "devices/service.rs",
            "fn f() { crate::links::service::are_linked(); }",
        ),
    ]);
    assert_eq!(
        found,
        ["module cycle: devices::service → links::service → devices::service"]
    );
}

#[test]
fn unplaced_modules_are_reported() {
    let found = synthetic(&[("payments/mod.rs", "")]);
    assert_eq!(
        found,
        ["src/payments/mod.rs: module `payments` has no layer; add it to tests/layering.rs"]
    );
}
