//! The files a reflection service answers from, indexed by file name, by symbol and by
//! extension, with each file's encoded bytes kept ready to send.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use plexus::prost::Message;
use plexus::prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};

use crate::Error;

/// One registered file.
#[derive(Debug)]
struct File {
    /// The file as indexed.
    proto: FileDescriptorProto,
    /// What is sent: the bytes as registered when they came encoded, so options and fields
    /// prost-types does not model (custom options, editions) reach the client intact.
    encoded: Bytes,
    /// Indices of the files it imports, in import order.
    imports: Vec<usize>,
}

/// A file as registered, before the pool is built.
#[derive(Debug)]
pub(crate) struct Candidate {
    proto: FileDescriptorProto,
    encoded: Bytes,
}

impl Candidate {
    /// A file registered by hand; it is sent as prost encodes it.
    pub(crate) fn from_proto(proto: FileDescriptorProto) -> Candidate {
        let encoded = Bytes::from(proto.encode_to_vec());
        Candidate { proto, encoded }
    }

    /// Every file of an encoded `google.protobuf.FileDescriptorSet`, each with its own bytes.
    pub(crate) fn from_encoded_set(set: &[u8]) -> Result<Vec<Candidate>, Error> {
        let set = Bytes::copy_from_slice(set);
        let mut files = Vec::new();
        for encoded in split_set(&set)? {
            let proto = FileDescriptorProto::decode(encoded.clone()).map_err(|e| {
                Error::new(format!(
                    "file {} of the descriptor set is not a FileDescriptorProto: {e}",
                    files.len()
                ))
            })?;
            files.push(Candidate { proto, encoded });
        }
        Ok(files)
    }

    fn name(&self) -> &str {
        self.proto.name()
    }
}

/// The slices of `set` that are its `file` entries (field 1): read off the wire rather than
/// through prost-types, which would drop what it does not model.
fn split_set(set: &Bytes) -> Result<Vec<Bytes>, Error> {
    let bad = |why: &str| Error::new(format!("the descriptor set is not valid protobuf: {why}"));
    let mut files = Vec::new();
    let mut rest: &[u8] = set;
    while !rest.is_empty() {
        let key = plexus::prost::encoding::decode_varint(&mut rest).map_err(|_| bad("bad tag"))?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                plexus::prost::encoding::decode_varint(&mut rest).map_err(|_| bad("bad varint"))?;
            }
            1 | 5 => {
                let width = if wire_type == 1 { 8 } else { 4 };
                if rest.len() < width {
                    return Err(bad("truncated fixed-width field"));
                }
                rest = &rest[width..];
            }
            2 => {
                let len = plexus::prost::encoding::decode_varint(&mut rest)
                    .map_err(|_| bad("bad length"))?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&len| len <= rest.len())
                    .ok_or_else(|| bad("a length runs past the end"))?;
                if field == 1 {
                    let start = set.len() - rest.len();
                    files.push(set.slice(start..start + len));
                }
                rest = &rest[len..];
            }
            _ => return Err(bad("unsupported wire type")),
        }
    }
    Ok(files)
}

/// The indexed files.
#[derive(Debug)]
pub(crate) struct Pool {
    files: Vec<File>,
    by_name: HashMap<String, usize>,
    /// Fully-qualified symbol (no leading dot) to the file declaring it.
    symbols: HashMap<String, usize>,
    /// (extended message, field number) to the file declaring the extension.
    extensions: HashMap<(String, i32), usize>,
    /// Extended message to its extension numbers, in increasing order.
    extension_numbers: HashMap<String, BTreeSet<i32>>,
}

impl Pool {
    /// Indexes `candidates`. A file registered twice is kept once when both copies say the
    /// same (source info aside); imports missing from `candidates` come from `fallback`
    /// (the well-known types) or are an error.
    pub(crate) fn build(
        candidates: Vec<Candidate>,
        fallback: Vec<Candidate>,
    ) -> Result<Pool, Error> {
        let mut pool = Pool {
            files: Vec::new(),
            by_name: HashMap::new(),
            symbols: HashMap::new(),
            extensions: HashMap::new(),
            extension_numbers: HashMap::new(),
        };
        let mut accepted: Vec<Candidate> = Vec::new();
        for candidate in candidates {
            if candidate.name().is_empty() {
                return Err(Error::new("a registered file has no name"));
            }
            match pool.by_name.get(candidate.name()) {
                Some(&index) => {
                    if !same_file(&accepted[index].proto, &candidate.proto) {
                        return Err(Error::new(format!(
                            "two different files are registered as {}",
                            candidate.name()
                        )));
                    }
                }
                None => {
                    pool.by_name
                        .insert(candidate.name().to_string(), accepted.len());
                    accepted.push(candidate);
                }
            }
        }
        // Pull in the fallback files that something imports, and what they import in turn.
        let fallback: HashMap<String, Candidate> = fallback
            .into_iter()
            .map(|c| (c.name().to_string(), c))
            .collect();
        let mut next = 0;
        while next < accepted.len() {
            let imports = accepted[next].proto.dependency.clone();
            for import in imports {
                if pool.by_name.contains_key(&import) {
                    continue;
                }
                let Some(file) = fallback.get(&import) else {
                    return Err(Error::new(format!(
                        "{} imports {import}, which is not registered",
                        accepted[next].name()
                    )));
                };
                let copy = Candidate {
                    proto: file.proto.clone(),
                    encoded: file.encoded.clone(),
                };
                pool.by_name.insert(import, accepted.len());
                accepted.push(copy);
            }
            next += 1;
        }
        for (index, candidate) in accepted.into_iter().enumerate() {
            let imports = candidate
                .proto
                .dependency
                .iter()
                .map(|import| pool.by_name[import])
                .collect();
            pool.index_file(index, &candidate.proto)?;
            pool.files.push(File {
                proto: candidate.proto,
                encoded: candidate.encoded,
                imports,
            });
        }
        Ok(pool)
    }

    /// Records every symbol and extension `file` declares.
    fn index_file(&mut self, index: usize, file: &FileDescriptorProto) -> Result<(), Error> {
        let scope = file.package().to_string();
        let mut names = Vec::new();
        for message in &file.message_type {
            message_symbols(&scope, message, &mut names);
        }
        for enumeration in &file.enum_type {
            enum_symbols(&scope, enumeration, &mut names);
        }
        for service in &file.service {
            let service_name = qualify(&scope, service.name());
            for method in &service.method {
                names.push(qualify(&service_name, method.name()));
            }
            names.push(service_name);
        }
        let mut extensions = Vec::new();
        collect_extensions(
            &scope,
            &file.extension,
            &file.message_type,
            &mut names,
            &mut extensions,
        );
        for name in names {
            if let Some(&other) = self.symbols.get(&name) {
                if other != index {
                    return Err(Error::new(format!(
                        "{name} is declared in both {} and {}",
                        self.file_name(other, file),
                        file.name()
                    )));
                }
            }
            self.symbols.insert(name, index);
        }
        for field in extensions {
            let extendee = field.extendee().trim_start_matches('.').to_string();
            let number = field.number();
            if self.extensions.contains_key(&(extendee.clone(), number)) {
                return Err(Error::new(format!(
                    "extension number {number} of {extendee} is declared twice ({})",
                    file.name()
                )));
            }
            self.extensions.insert((extendee.clone(), number), index);
            self.extension_numbers
                .entry(extendee)
                .or_default()
                .insert(number);
        }
        Ok(())
    }

    /// The name of file `index`, which may be `current` (not yet in `files`).
    fn file_name<'a>(&'a self, index: usize, current: &'a FileDescriptorProto) -> &'a str {
        self.files
            .get(index)
            .map_or(current.name(), |file| file.proto.name())
    }

    /// The index of the file called `name`.
    pub(crate) fn file_by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The index of the file declaring `symbol` (a leading dot is allowed).
    pub(crate) fn file_containing_symbol(&self, symbol: &str) -> Option<usize> {
        let symbol = symbol.strip_prefix('.').unwrap_or(symbol);
        self.symbols.get(symbol).copied()
    }

    /// The index of the file declaring extension `number` of `extendee`.
    pub(crate) fn file_containing_extension(&self, extendee: &str, number: i32) -> Option<usize> {
        let extendee = extendee.strip_prefix('.').unwrap_or(extendee);
        self.extensions
            .get(&(extendee.to_string(), number))
            .copied()
    }

    /// The extension numbers of message `name`, in increasing order; `None` when no message
    /// of that name is known.
    pub(crate) fn extension_numbers(&self, name: &str) -> Option<Vec<i32>> {
        let name = name.strip_prefix('.').unwrap_or(name);
        if let Some(numbers) = self.extension_numbers.get(name) {
            return Some(numbers.iter().copied().collect());
        }
        self.symbols.contains_key(name).then(Vec::new)
    }

    /// Every service declared in the registered files.
    pub(crate) fn services(&self) -> impl Iterator<Item = String> + '_ {
        self.files.iter().flat_map(|file| {
            file.proto
                .service
                .iter()
                .map(|service| qualify(file.proto.package(), service.name()))
        })
    }

    /// Whether `name` is a service in the pool.
    pub(crate) fn has_service(&self, name: &str) -> bool {
        self.services().any(|service| service == name)
    }

    /// File `index` followed by its transitive imports that are not in `sent`, breadth
    /// first; every file returned is added to `sent`. The file asked for is sent even when
    /// it went out before, since the client asked for it by name.
    pub(crate) fn with_imports(&self, index: usize, sent: &mut HashSet<usize>) -> Vec<Bytes> {
        let mut out = vec![self.files[index].encoded.clone()];
        sent.insert(index);
        let mut seen = HashSet::from([index]);
        let mut queue: VecDeque<usize> = self.files[index].imports.iter().copied().collect();
        while let Some(next) = queue.pop_front() {
            if !seen.insert(next) {
                continue;
            }
            if sent.insert(next) {
                out.push(self.files[next].encoded.clone());
            }
            queue.extend(self.files[next].imports.iter().copied());
        }
        out
    }
}

/// `scope.name`, or `name` at the root.
fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

/// The message, its fields and oneofs, and everything nested in it.
fn message_symbols(scope: &str, message: &DescriptorProto, names: &mut Vec<String>) {
    let name = qualify(scope, message.name());
    for field in &message.field {
        names.push(qualify(&name, field.name()));
    }
    for oneof in &message.oneof_decl {
        names.push(qualify(&name, oneof.name()));
    }
    for nested in &message.nested_type {
        message_symbols(&name, nested, names);
    }
    for enumeration in &message.enum_type {
        enum_symbols(&name, enumeration, names);
    }
    names.push(name);
}

/// The enum, and its values, which protobuf scopes beside the enum (C++ rules), not in it.
fn enum_symbols(scope: &str, enumeration: &EnumDescriptorProto, names: &mut Vec<String>) {
    for value in &enumeration.value {
        names.push(qualify(scope, value.name()));
    }
    names.push(qualify(scope, enumeration.name()));
}

/// Extensions declared at `scope` and inside its messages: their names go to `names`, the
/// fields themselves to `out`.
fn collect_extensions<'a>(
    scope: &str,
    extensions: &'a [FieldDescriptorProto],
    messages: &'a [DescriptorProto],
    names: &mut Vec<String>,
    out: &mut Vec<&'a FieldDescriptorProto>,
) {
    for field in extensions {
        names.push(qualify(scope, field.name()));
        out.push(field);
    }
    for message in messages {
        let inner = qualify(scope, message.name());
        collect_extensions(&inner, &message.extension, &message.nested_type, names, out);
    }
}

/// Whether two files with one name declare the same things (their source info aside).
fn same_file(a: &FileDescriptorProto, b: &FileDescriptorProto) -> bool {
    let strip = |file: &FileDescriptorProto| FileDescriptorProto {
        source_code_info: None,
        ..file.clone()
    };
    strip(a) == strip(b)
}
