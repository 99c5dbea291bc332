//! The PyO3 binding layer: thin wrappers over the core, error mapping,
//! GIL release, progress forwarding and cancellation.  No logic of its own.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::appliance::{self, Appliance};
use crate::backend::{self, Backend};
use crate::boot::Modules;
use crate::error::Error;
use crate::package::{File, Package};
use crate::report::{Cancel, Reporter};
use crate::{BuildOptions, PrepareOptions, ScratchBase};

// Declared in module `supermin` (where they are imported from), so that
// tracebacks name them so and pickle finds them.
create_exception!(
    supermin,
    SuperminError,
    PyException,
    "Base class of every supermin error."
);
create_exception!(
    supermin,
    UsageError,
    SuperminError,
    "An argument or option has a value supermin cannot use (an unknown format, package manager, size...)."
);
create_exception!(
    supermin,
    PackageNotFoundError,
    SuperminError,
    "Named packages are not installed; see .names."
);
create_exception!(
    supermin,
    ApplianceError,
    SuperminError,
    "A supermin appliance input is malformed; see .path."
);
create_exception!(
    supermin,
    BackendError,
    SuperminError,
    "The package database, a package file or a package tool failed; see .path (the package file, or None)."
);
create_exception!(
    supermin,
    OutputError,
    SuperminError,
    "The output cannot be written or replaced; see .path."
);

create_exception!(
    supermin,
    KernelError,
    SuperminError,
    "No usable kernel or kernel modules; see .path (may be None)."
);

/// `text` without the `(os error N)` that Rust's I/O errors end with: the
/// reason is said in words before it, and the number means nothing to a
/// reader.
fn without_os_error(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" (os error ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " (os error ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(')') {
            rest = &after[digits + 1..];
        } else {
            out.push_str(" (os error ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn to_py(err: Error) -> PyErr {
    let message = without_os_error(&err.to_string());
    Python::attach(|py| {
        let (exc, attr): (PyErr, Option<(&str, Py<PyAny>)>) = match &err {
            Error::PackageNotFound { names } => (
                PackageNotFoundError::new_err(message),
                Some((
                    "names",
                    names.clone().into_pyobject(py).unwrap().into_any().unbind(),
                )),
            ),
            Error::BadInput { path, .. } => (
                ApplianceError::new_err(message),
                Some((
                    "path",
                    path.clone().into_pyobject(py).unwrap().into_any().unbind(),
                )),
            ),
            Error::Output { path, .. } | Error::Io { path, .. } => {
                let exc = if matches!(err, Error::Output { .. }) {
                    OutputError::new_err(message)
                } else {
                    SuperminError::new_err(message)
                };
                (
                    exc,
                    Some((
                        "path",
                        path.clone().into_pyobject(py).unwrap().into_any().unbind(),
                    )),
                )
            }
            Error::Backend { .. } => (BackendError::new_err(message), Some(("path", py.None()))),
            Error::Kernel { path, .. } => (
                KernelError::new_err(message),
                Some((
                    "path",
                    path.clone().into_pyobject(py).unwrap().into_any().unbind(),
                )),
            ),
            Error::Usage(_) => (UsageError::new_err(message), None),
            Error::Internal(_) | Error::Cancelled => (SuperminError::new_err(message), None),
        };
        if let Some((name, value)) = attr {
            let _ = exc.value(py).setattr(name, value);
        }
        exc
    })
}

/// Where the core's messages go (`sink(is_warning, text)`, called on the
/// caller's thread); `None`: `supermin: TEXT` on `sys.stderr`, as the
/// command line prints them.  The Python layer routes them to `logging`
/// and `warnings`.
static MESSAGES: std::sync::Mutex<Option<Py<PyAny>>> = std::sync::Mutex::new(None);

/// Set (or with `None`, clear) the message sink of every later call.
#[pyfunction]
#[pyo3(signature = (sink))]
fn _set_messages(sink: Option<Py<PyAny>>) {
    *MESSAGES.lock().expect("not poisoned") = sink;
}

/// What the worker of [`run_with`] tells the caller's thread.
enum Event {
    /// A progress report; the worker waits for the reply.
    Progress(String, u64, u64, mpsc::SyncSender<()>),
    /// A message for stderr (`true`: a warning).
    Message(bool, String),
}

/// How often the caller's thread wakes, without the GIL, to look for
/// signals while core work runs: Ctrl-C stops a build well within a second.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Run core work on a worker thread while the caller's thread waits
/// without the GIL, waking every [`SIGNAL_POLL`] to run Python's signal
/// handlers and to hand progress and messages to Python.  The progress
/// callback is therefore always called on the caller's thread, one event
/// at a time, the worker waiting for it.  A signal handler that raises
/// (`KeyboardInterrupt` on Ctrl-C, whatever a SIGTERM handler raises) or a
/// callback that raises cancels the work: the core stops at its next
/// check, removes what it was writing and keeps the previous output, and
/// that exception is raised here.  Work that had already finished (the
/// new output swapped in) returns normally: the interruption came too late
/// to undo it, and reporting a failure would be false.  A panic becomes a
/// SuperminError.
fn run_with<T: Send>(
    py: Python<'_>,
    verbose: u8,
    progress: Option<Py<PyAny>>,
    f: impl FnOnce(&Reporter) -> crate::Result<T> + Send,
) -> PyResult<T> {
    let cancel = Cancel::default();
    let (tx, rx) = mpsc::channel::<Event>();
    let messages = tx.clone();
    let mut reporter = Reporter::new(verbose)
        .with_cancel(cancel.clone())
        .with_messages(Box::new(move |warning, text| {
            let _ = messages.send(Event::Message(warning, text));
        }));
    if progress.is_some() {
        let events = tx.clone();
        reporter = reporter.with_progress(Box::new(move |stage: &str, done: u64, total: u64| {
            let (reply, wait) = mpsc::sync_channel(1);
            if events
                .send(Event::Progress(stage.to_string(), done, total, reply))
                .is_ok()
            {
                let _ = wait.recv();
            }
        }));
    }
    drop(tx);
    // `detach` needs what it borrows to be Sync; only this thread receives.
    let rx = std::sync::Mutex::new(rx);
    let mut raised: Option<PyErr> = None;
    let result = std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let reporter = reporter;
            catch_unwind(AssertUnwindSafe(|| f(&reporter)))
        });
        loop {
            let event = py.detach(|| rx.lock().expect("one receiver").recv_timeout(SIGNAL_POLL));
            match event {
                Ok(Event::Progress(stage, done, total, reply)) => {
                    if let (None, Some(cb)) = (&raised, &progress) {
                        if let Err(e) = cb.call1(py, (stage, done, total)) {
                            cancel.cancel();
                            raised = Some(e);
                        }
                    }
                    let _ = reply.send(());
                }
                Ok(Event::Message(warning, text)) => {
                    let sink = MESSAGES
                        .lock()
                        .expect("not poisoned")
                        .as_ref()
                        .map(|s| s.clone_ref(py));
                    let delivered = match sink {
                        Some(sink) => sink.call1(py, (warning, text)).map(drop),
                        None => {
                            let line = if warning {
                                format!("supermin: warning: {text}\n")
                            } else {
                                format!("supermin: {text}\n")
                            };
                            py.import("sys")
                                .and_then(|sys| sys.getattr("stderr"))
                                .and_then(|err| err.call_method1("write", (line,)))
                                .map(drop)
                        }
                    };
                    // A sink that raises (a warnings filter set to "error")
                    // stops the work as a raising callback does.
                    if let (Err(e), None) = (delivered, &raised) {
                        cancel.cancel();
                        raised = Some(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if raised.is_none() {
                if let Err(e) = py.check_signals() {
                    cancel.cancel();
                    raised = Some(e);
                }
            }
        }
        worker.join().unwrap_or_else(Err)
    });
    let result = result.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(Error::Internal(msg))
    });
    match (result, raised) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(exception)) => Err(exception),
        (Err(e), None) => Err(to_py(e)),
    }
}

/// [`run_with`] for work that reports nothing.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    run_with(py, 0, None, |_| f())
}

/// `obj`'s HTML repr, made by `supermin._html.KIND` (the Python layer
/// owns the presentation).
fn html(py: Python<'_>, kind: &str, obj: &Bound<'_, PyAny>) -> PyResult<String> {
    py.import("supermin._html")?
        .getattr(kind)?
        .call1((obj,))?
        .extract()
}

/// The class `supermin.File` (a Python dataclass: a value, unlike the
/// extension's classes), looked up once per list it makes.
fn file_class(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("supermin._data")?.getattr("File")
}

/// A `supermin.File` of `class` for `file`, listed by `package` and taken
/// from `origin`.
fn py_file<'py>(
    class: &Bound<'py, PyAny>,
    file: &File,
    package: Option<&str>,
    origin: &str,
) -> PyResult<Bound<'py, PyAny>> {
    class.call1((
        file.path.to_string_lossy().into_owned(),
        file.kind.as_str(),
        file.mode,
        file.size,
        file.is_config,
        package,
        origin,
    ))
}

/// A package given by name or as a `Package` object.
#[derive(FromPyObject)]
enum NameOrPackage {
    Name(String),
    Package(Py<PyPackage>),
}

impl NameOrPackage {
    fn name(&self, py: Python<'_>) -> String {
        match self {
            NameOrPackage::Name(n) => n.clone(),
            NameOrPackage::Package(p) => p.borrow(py).inner.name.clone(),
        }
    }
}

/// An installed package.
#[pyclass(frozen, name = "Package", module = "supermin")]
pub struct PyPackage {
    inner: Package,
    files_from: FilesFrom,
}

/// Where a package's file list comes from.
enum FilesFrom {
    /// The package database of an installed package.
    Database(Arc<dyn Backend>),
    /// A package file, already read.
    Archive {
        path: PathBuf,
        packager: &'static str,
        files: Arc<Vec<crate::package::File>>,
    },
}

impl PyPackage {
    fn installed(inner: Package, backend: Arc<dyn Backend>) -> Self {
        PyPackage {
            inner,
            files_from: FilesFrom::Database(backend),
        }
    }

    fn load_files(&self, py: Python<'_>) -> PyResult<Vec<crate::package::File>> {
        match &self.files_from {
            FilesFrom::Archive { files, .. } => Ok(files.as_ref().clone()),
            FilesFrom::Database(backend) => run(py, || backend.files(&self.inner)),
        }
    }
}

#[pymethods]
impl PyPackage {
    /// The package's name (`bash`).
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }
    /// Its version as the package manager writes it (`5.2.15-2+b8`).
    #[getter]
    fn version(&self) -> &str {
        &self.inner.version
    }
    /// Its architecture (`amd64`, `x86_64`, `all`, `noarch`...).
    #[getter]
    fn arch(&self) -> &str {
        &self.inner.arch
    }
    /// As upstream prints it: `name_version_arch` for dpkg,
    /// `name-[epoch:]version-release.arch` for rpm, `name-version.arch`
    /// for pacman and apk.
    #[getter]
    fn full_name(&self) -> &str {
        &self.inner.full_name
    }
    /// Dependency clauses as written (dpkg: Pre-Depends then Depends; rpm:
    /// the requires, `name op version`; pacman and apk: `name[op version]`).
    #[getter]
    fn depends(&self) -> Vec<String> {
        self.inner.depends.clone()
    }
    /// Its licence as the package database records it (rpm `License`,
    /// pacman `%LICENSE%`, apk `L:`), or None (dpkg records none).
    #[getter]
    fn license(&self) -> Option<&str> {
        self.inner.license.as_deref()
    }
    /// Who supplies it as the database records it (dpkg `Maintainer`, rpm
    /// `Vendor` or `Packager`, pacman `%PACKAGER%`, apk `m:`), or None.
    #[getter]
    fn supplier(&self) -> Option<&str> {
        self.inner.supplier.as_deref()
    }
    /// The package manager it belongs to: `dpkg`, `rpm`, `pacman` or `apk`.
    #[getter]
    fn packager(&self) -> &'static str {
        match &self.files_from {
            FilesFrom::Database(backend) => backend.name(),
            FilesFrom::Archive { packager, .. } => packager,
        }
    }
    /// The package's files (`supermin.File` values): kinds, modes and
    /// sizes from the host for an installed package, from the package file
    /// for one read with `from_file`.
    #[getter]
    fn files<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let files = self.load_files(py)?;
        let class = file_class(py)?;
        files
            .iter()
            .map(|f| py_file(&class, f, Some(&self.inner.name), "package"))
            .collect()
    }
    /// A package read from a package file (`.deb`, `.rpm`, `.pkg.tar.*`,
    /// `.apk`), with the files it would install (kinds and modes from the
    /// package, not the host).
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<PyPackage> {
        let (inner, files, packager) = run(py, || {
            let (inner, files) = crate::backend::read_package_file(&path)?;
            Ok((inner, files, crate::backend::package_file_packager(&path)?))
        })
        .inspect_err(|e| {
            // The file at fault, whatever the reader said.
            let _ = e.value(py).setattr("path", path.clone());
        })?;
        Ok(PyPackage {
            inner,
            files_from: FilesFrom::Archive {
                path,
                packager,
                files: Arc::new(files),
            },
        })
    }
    /// Pickled as what finds it again: the same root's database and full
    /// name, or the package file's path.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = slf.py();
        let this = slf.get();
        match &this.files_from {
            FilesFrom::Database(backend) => Ok((
                py.import("supermin._data")?.getattr("_installed_package")?,
                (
                    backend.name(),
                    backend.root().path().to_path_buf(),
                    this.inner.full_name.clone(),
                )
                    .into_pyobject(py)?
                    .into_any(),
            )),
            FilesFrom::Archive { path, .. } => Ok((
                py.get_type::<PyPackage>().getattr("from_file")?,
                (path.clone(),).into_pyobject(py)?.into_any(),
            )),
        }
    }
    fn __repr__(&self) -> String {
        format!("<Package {}>", self.inner.full_name)
    }
    fn __str__(&self) -> &str {
        &self.inner.full_name
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyPackage>()
            .map(|o| o.get().inner.full_name == self.inner.full_name)
            .unwrap_or(false)
    }
    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.full_name.hash(&mut h);
        h.finish()
    }
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.py(), "package", slf.as_any())
    }
}

/// A package database (dpkg, ...) under a root.
#[pyclass(frozen, name = "Backend", module = "supermin")]
pub struct PyBackend {
    inner: Arc<dyn Backend>,
    /// Every package's paths, read at the first `owner()`.
    owners: std::sync::OnceLock<crate::owners::OwnerIndex>,
}

impl PyBackend {
    fn new(inner: Box<dyn Backend>) -> Self {
        PyBackend {
            inner: Arc::from(inner),
            owners: Default::default(),
        }
    }

    fn wrap(&self, p: Package) -> PyPackage {
        PyPackage::installed(p, self.inner.clone())
    }
}

#[pymethods]
impl PyBackend {
    /// The backend of the package manager that manages `root`.
    #[staticmethod]
    #[pyo3(signature = (root = PathBuf::from("/"), *, tmpdir = None), text_signature = "(root='/', *, tmpdir=None)")]
    fn detect(py: Python<'_>, root: PathBuf, tmpdir: Option<PathBuf>) -> PyResult<Self> {
        let inner = run(py, || backend::detect(&root, &scratch_base(tmpdir)?))?;
        Ok(PyBackend::new(inner))
    }
    /// The backend of a given kind ("dpkg") reading `root`.
    #[staticmethod]
    #[pyo3(signature = (kind, root = PathBuf::from("/"), *, tmpdir = None), text_signature = "(kind, root='/', *, tmpdir=None)")]
    fn open(py: Python<'_>, kind: &str, root: PathBuf, tmpdir: Option<PathBuf>) -> PyResult<Self> {
        let inner = run(py, || backend::open(kind, &root, &scratch_base(tmpdir)?))?;
        Ok(PyBackend::new(inner))
    }
    /// The package manager: `dpkg`, `rpm`, `pacman` or `apk`.
    #[getter]
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    /// The root whose database this reads.
    #[getter]
    fn root(&self) -> PathBuf {
        self.inner.root().path().to_path_buf()
    }
    /// When the package database last changed (seconds since the epoch).
    #[getter]
    fn database_mtime(&self) -> PyResult<f64> {
        let time = self.inner.database_mtime().map_err(to_py)?;
        Ok(time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()))
    }
    /// Every installed package.
    fn packages(&self) -> Vec<PyPackage> {
        self.inner
            .packages()
            .into_iter()
            .map(|p| self.wrap(p))
            .collect()
    }
    /// The installed package called `name` (a name, or a `Package` whose
    /// name is taken); PackageNotFoundError if none.
    fn package(&self, py: Python<'_>, name: NameOrPackage) -> PyResult<PyPackage> {
        self.inner
            .package(&name.name(py))
            .map(|p| self.wrap(p))
            .map_err(to_py)
    }
    /// The dependency closure of `names` (names or `Package` objects),
    /// including them, sorted by name.
    #[pyo3(signature = (names, verbose = 0))]
    fn resolve<'py>(
        &self,
        py: Python<'py>,
        names: Vec<NameOrPackage>,
        verbose: u8,
    ) -> PyResult<Bound<'py, PyAny>> {
        let names: Vec<String> = names.iter().map(|n| n.name(py)).collect();
        let backend = self.inner.clone();
        let closure = run_with(py, verbose, None, move |reporter| {
            let roots = backend.packages_named(&names)?;
            backend.resolve_explained(&roots, reporter)
        })?;
        let mut packages = Vec::with_capacity(closure.len());
        let mut reasons = Vec::with_capacity(closure.len());
        for (package, why) in closure {
            packages.push(self.wrap(package));
            reasons.push(match why {
                crate::resolve::Why::Named => None,
                crate::resolve::Why::Needed { by, clause } => Some((by, clause)),
            });
        }
        py.import("supermin._data")?
            .getattr("_closure")?
            .call1((packages, reasons))
    }
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.py(), "backend", slf.as_any())
    }
    /// The installed packages that list `path` (several for a shared
    /// directory), sorted by name; directories are resolved inside the
    /// root on both sides, so `/usr/bin/ls` is found where the database
    /// says `/bin/ls` (merged /usr).  The first call reads every
    /// package's file list (about a second); later ones are lookups.
    fn owners(&self, py: Python<'_>, path: PathBuf) -> PyResult<Vec<PyPackage>> {
        let backend = self.inner.clone();
        let index = match self.owners.get() {
            Some(index) => index,
            None => {
                let built = run_with(py, 0, None, move |reporter| {
                    crate::owners::OwnerIndex::build(backend.as_ref(), reporter)
                })?;
                self.owners.get_or_init(|| built)
            }
        };
        let mut owners: Vec<PyPackage> = index
            .owners(self.inner.root(), &path)
            .into_iter()
            .map(|p| self.wrap(p.clone()))
            .collect();
        owners.sort_by(|a, b| a.inner.name.cmp(&b.inner.name));
        Ok(owners)
    }
    /// The installed package that lists `path`, or None (for a directory
    /// that several list, the first by name); see `owners`.
    fn owner(&self, py: Python<'_>, path: PathBuf) -> PyResult<Option<PyPackage>> {
        Ok(self.owners(py, path)?.into_iter().next())
    }
    /// Pickled as its kind and root: opened again when unpickled.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = slf.py();
        let this = slf.get();
        Ok((
            py.get_type::<PyBackend>().getattr("open")?,
            (this.inner.name(), this.inner.root().path().to_path_buf())
                .into_pyobject(py)?
                .into_any(),
        ))
    }
    fn __repr__(&self) -> String {
        format!(
            "<Backend {} root={} packages={}>",
            self.inner.name(),
            self.inner.root().path().display(),
            self.inner.package_count()
        )
    }
}

/// A supermin appliance (the inputs of a build), as read from disk.
#[pyclass(frozen, name = "Appliance", module = "supermin")]
pub struct PyAppliance {
    inner: Appliance,
}

#[pymethods]
impl PyAppliance {
    /// Read one or more supermin appliance files or directories.
    #[staticmethod]
    fn load(py: Python<'_>, paths: &Bound<'_, PyAny>) -> PyResult<Self> {
        let paths: Vec<PathBuf> = match paths.extract::<PathBuf>() {
            Ok(p) => vec![p],
            Err(_) => paths.extract()?,
        };
        let inner = run(py, || appliance::load(&paths))?;
        Ok(PyAppliance { inner })
    }
    /// The files and directories it was read from.
    #[getter]
    fn inputs(&self) -> Vec<PathBuf> {
        self.inner.inputs.clone()
    }
    /// The package names of its `packages` files.
    #[getter]
    fn packages(&self) -> Vec<String> {
        self.inner.packages.clone()
    }
    /// The glob patterns of its `hostfiles` files.
    #[getter]
    fn hostfiles(&self) -> Vec<String> {
        self.inner.hostfiles.clone()
    }
    /// The fnmatch patterns of its `excludefiles`, without the leading `-`.
    #[getter]
    fn excludes(&self) -> Vec<String> {
        self.inner.excludes.clone()
    }
    /// Its tarballs (`base.tar.gz`...), in the order they are unpacked.
    #[getter]
    fn base_images(&self) -> Vec<PathBuf> {
        self.inner
            .base_images
            .iter()
            .map(|b| b.path.clone())
            .collect()
    }
    /// Every path a build would write, sorted, as `supermin.File` values
    /// with their origin (`package`, with the package's name; `base
    /// image`; `hostfiles`; `directory`, implied by others;
    /// `alternatives`), kinds, modes and sizes as the root (or the base
    /// image) has them.
    #[pyo3(
        signature = (root = PathBuf::from("/"), ignore_missing = false),
        text_signature = "($self, root='/', ignore_missing=False)"
    )]
    fn files<'py>(
        &self,
        py: Python<'py>,
        root: PathBuf,
        ignore_missing: bool,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let listed = run_with(py, 0, None, |reporter| {
            let backend = backend::detect(&root, &scratch_base(None)?)?;
            crate::assemble::listing(backend.as_ref(), &self.inner, ignore_missing, reporter)
        })?;
        let class = file_class(py)?;
        listed
            .iter()
            .map(|l| py_file(&class, &l.file, l.package.as_deref(), l.origin.as_str()))
            .collect()
    }
    /// What a build of `other` would write differently from a build of
    /// this one (both from `root`): a `supermin.ApplianceDiff` of added,
    /// removed and changed `File` values.
    #[pyo3(
        signature = (other, root = PathBuf::from("/"), ignore_missing = false),
        text_signature = "($self, other, root='/', ignore_missing=False)"
    )]
    fn diff<'py>(
        &self,
        py: Python<'py>,
        other: &PyAppliance,
        root: PathBuf,
        ignore_missing: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = self.files(py, root.clone(), ignore_missing)?;
        let that = other.files(py, root, ignore_missing)?;
        py.import("supermin._data")?
            .getattr("_diff")?
            .call1((this, that))
    }
    /// Pickled as its inputs: read again when unpickled.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = slf.py();
        Ok((
            py.get_type::<PyAppliance>().getattr("load")?,
            (slf.get().inner.inputs.clone(),)
                .into_pyobject(py)?
                .into_any(),
        ))
    }
    /// Build this appliance; see `supermin.build`.
    #[pyo3(signature = (output, format = "chroot", **options))]
    fn build<'py>(
        slf: &Bound<'py, Self>,
        output: PathBuf,
        format: &str,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kwargs = options.cloned().unwrap_or_else(|| PyDict::new(py));
        kwargs.set_item("format", format)?;
        py.import("supermin")?
            .getattr("build")?
            .call((vec![slf.clone()], output), Some(&kwargs))
    }
    fn __repr__(&self) -> String {
        format!(
            "<Appliance {} packages={} hostfiles={} excludes={} base_images={}>",
            self.inner
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            self.inner.packages.len(),
            self.inner.hostfiles.len(),
            self.inner.excludes.len(),
            self.inner.base_images.len()
        )
    }
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.py(), "appliance", slf.as_any())
    }
}

/// The `ID` of `root`'s os-release, read inside it (None if none).
#[pyfunction]
fn _os_release_id(root: PathBuf) -> Option<String> {
    let root = crate::rootfs::RootFs::open(&root).ok()?;
    backend::os_release_id(&root)
}

/// What the stamp of a build output records: `(packages as (name,
/// version, arch), kernel version)`, or None.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn _recorded(
    output: PathBuf,
    format: &str,
) -> PyResult<Option<(Vec<(String, String, String)>, Option<String>)>> {
    let format = crate::format::find(format).map_err(to_py)?;
    Ok(crate::stamp::recorded(&output, format))
}

/// Low-level prepare; the public wrapper is `supermin.prepare`.
#[pyfunction]
#[pyo3(signature = (packages, output, *, use_installed, root, ignore_missing, packager_config, always_download, source_date_epoch, lock, verbose, progress, backend=None, packager=None))]
#[allow(clippy::too_many_arguments)]
fn _prepare(
    py: Python<'_>,
    packages: Vec<String>,
    output: PathBuf,
    use_installed: bool,
    root: PathBuf,
    ignore_missing: bool,
    packager_config: Option<PathBuf>,
    always_download: bool,
    source_date_epoch: Option<u64>,
    lock: Option<PathBuf>,
    verbose: u8,
    progress: Option<Py<PyAny>>,
    backend: Option<PyRef<'_, PyBackend>>,
    packager: Option<String>,
) -> PyResult<()> {
    let options = PrepareOptions {
        use_installed,
        ignore_missing,
        packager_config,
        always_download,
        source_date_epoch,
        scratch: scratch_base(None).map_err(to_py)?,
    };
    let given = backend.map(|b| b.inner.clone());
    run_with(py, verbose, progress, |reporter| {
        let backend = backend_for(given, &root, packager.as_deref())?;
        crate::prepare(
            backend.as_ref(),
            &packages,
            &output,
            &options,
            lock.as_deref(),
            reporter,
        )
        .map(drop)
    })
}

/// Low-level build; the public wrapper is `supermin.build`.
#[pyfunction]
#[pyo3(signature = (inputs, output, *, format, root, include_packagelist, ignore_missing, if_newer, lock, verbose, progress, size=None, copy_kernel=false, host_cpu=None, modules=None, uuid_seed=None, compression=None, source_date_epoch=None, backend=None, supermin_kernel=None, supermin_kernel_version=None, supermin_modules=None, invocation=None, packager=None, kernel_package=None, kernel_cache=None, packager_config=None))]
#[allow(clippy::too_many_arguments)]
fn _build(
    py: Python<'_>,
    inputs: Vec<PathBuf>,
    output: PathBuf,
    format: &str,
    root: PathBuf,
    include_packagelist: bool,
    ignore_missing: bool,
    if_newer: bool,
    lock: Option<PathBuf>,
    verbose: u8,
    progress: Option<Py<PyAny>>,
    size: Option<u64>,
    copy_kernel: bool,
    host_cpu: Option<String>,
    modules: Option<ModulesArg>,
    uuid_seed: Option<String>,
    compression: Option<String>,
    source_date_epoch: Option<u64>,
    backend: Option<PyRef<'_, PyBackend>>,
    supermin_kernel: Option<PathBuf>,
    supermin_kernel_version: Option<String>,
    supermin_modules: Option<PathBuf>,
    invocation: Option<Invocation>,
    packager: Option<String>,
    kernel_package: Option<String>,
    kernel_cache: Option<PathBuf>,
    packager_config: Option<PathBuf>,
) -> PyResult<PyBuilt> {
    let format = crate::format::find(format).map_err(to_py)?;
    let mut options = BuildOptions {
        format,
        include_packagelist,
        ignore_missing,
        if_newer,
        lock,
        database: None,
        invocation: invocation.map(|(args, cwd, env)| crate::stamp::Invocation { args, cwd, env }),
        // Without a cache, only the host's kernel (and SUPERMIN_KERNEL).
        kernel_packages: kernel_cache.map(|cache| crate::KernelPackages {
            given: kernel_package,
            cache,
            packager_config,
        }),
        formats: crate::format::Options {
            epoch: source_date_epoch,
            boot: crate::boot::Options {
                copy_kernel,
                host_cpu,
                kernel: crate::boot::kernel::Overrides {
                    kernel: supermin_kernel,
                    version: supermin_kernel_version,
                    modules: supermin_modules,
                },
                modules: modules.map(Modules::try_from).transpose()?,
            },
            ext2: crate::format::ext2::Options { size, uuid_seed },
            initramfs: crate::format::initramfs::Options {
                compression: compression
                    .map(|c| crate::format::initramfs::Compression::parse(&c))
                    .transpose()
                    .map_err(to_py)?
                    .unwrap_or_default(),
            },
        },
    };
    let given = backend.map(|b| b.inner.clone());
    let (backend, outcome) = run_with(py, verbose, progress, |reporter| {
        if given.is_none() {
            // Taken before the database is read; with --if-newer, an
            // output whose stamp still holds needs no database at all.
            options.database = Some(backend::database_state(&root, packager.as_deref())?);
            if options.if_newer
                && crate::is_up_to_date(&inputs, &output, &options, &root, reporter)?
            {
                return Ok((
                    None,
                    crate::BuildOutcome {
                        output: output.clone(),
                        skipped: true,
                        ..Default::default()
                    },
                ));
            }
        }
        let backend = backend_for(given, &root, packager.as_deref())?;
        let outcome = crate::build(backend.as_ref(), &inputs, &output, &options, reporter)?;
        Ok((Some(backend), outcome))
    })?;
    let boot = outcome.boot;
    Ok(PyBuilt {
        output: crate::output::absolute(&outcome.output).map_err(to_py)?,
        format: format.name(),
        skipped: outcome.skipped,
        rebuilt_because: outcome.rebuilt_because,
        packages: outcome
            .packages
            .into_iter()
            .map(|p| {
                let backend = backend
                    .clone()
                    .expect("a build that ran opened its backend");
                Py::new(py, PyPackage::installed(p, backend))
            })
            .collect::<PyResult<_>>()?,
        paths: outcome.paths,
        files_copied: outcome.stats.files,
        bytes_copied: outcome.stats.bytes,
        hard_links: outcome.stats.hard_links,
        unreadable: outcome.stats.skipped.unreadable,
        kernel_version: boot.as_ref().map(|b| b.kernel.version.clone()),
        uuid: boot.as_ref().and_then(|b| b.root_uuid.clone()),
        initrd_modules: boot.map(|b| b.initrd_modules).unwrap_or_default(),
    })
}

/// `invocation=`: `(args, cwd, [(name, value or None)])`, the command line
/// that asked for a build (see `stamp::Invocation`).
type Invocation = (Vec<String>, PathBuf, Vec<(String, Option<String>)>);

/// `modules=`: `"all"` (checked by the Python layer) or module names.
#[derive(FromPyObject)]
enum ModulesArg {
    All(String),
    Only(Vec<String>),
}

impl TryFrom<ModulesArg> for Modules {
    type Error = PyErr;
    fn try_from(arg: ModulesArg) -> PyResult<Modules> {
        match arg {
            ModulesArg::All(all) if all == "all" => Ok(Modules::All),
            ModulesArg::All(none) if none == "none" => Ok(Modules::None),
            ModulesArg::All(other) => Err(SuperminError::new_err(format!(
                "modules must be 'all', 'none' or a list of module names, not {other:?}"
            ))),
            ModulesArg::Only(names) => Ok(Modules::Only(names)),
        }
    }
}

/// The opened backend a caller gave, or the one that manages `root`: of
/// the `packager` kind (`--packager`) when named, else detected.
fn backend_for(
    given: Option<Arc<dyn Backend>>,
    root: &std::path::Path,
    packager: Option<&str>,
) -> crate::Result<Arc<dyn Backend>> {
    match (given, packager) {
        (Some(backend), _) => Ok(backend),
        (None, Some(kind)) => Ok(Arc::from(backend::open(kind, root, &scratch_base(None)?)?)),
        (None, None) => Ok(Arc::from(backend::detect(root, &scratch_base(None)?)?)),
    }
}

/// Where scratch directories go: `tmpdir` if the caller named one, else
/// `$TMPDIR` or `/var/tmp`.  The one place the Python module reads
/// `TMPDIR` (the core reads no environment).
fn scratch_base(tmpdir: Option<PathBuf>) -> crate::Result<ScratchBase> {
    match tmpdir {
        Some(dir) => ScratchBase::new(dir),
        None => ScratchBase::from_env(),
    }
}

/// What `_build` did; `supermin.build` turns it into a `BuildResult`.
#[pyclass(frozen, get_all, name = "_Built", module = "supermin._supermin")]
struct PyBuilt {
    output: PathBuf,
    format: &'static str,
    skipped: bool,
    rebuilt_because: Vec<String>,
    packages: Vec<Py<PyPackage>>,
    paths: usize,
    files_copied: u64,
    bytes_copied: u64,
    hard_links: u64,
    unreadable: Vec<PathBuf>,
    kernel_version: Option<String>,
    uuid: Option<String>,
    initrd_modules: Vec<String>,
}

/// A private scratch directory (see `output::Scratch`): locked while it is
/// open, removed by `close()`, or by the next one made if this process is
/// killed.
#[pyclass(name = "_Scratch", module = "supermin._supermin")]
struct PyScratch {
    inner: Option<crate::output::Scratch>,
}

#[pymethods]
impl PyScratch {
    #[getter]
    fn path(&self) -> PyResult<PathBuf> {
        self.inner
            .as_ref()
            .map(|s| s.path().to_path_buf())
            .ok_or_else(|| SuperminError::new_err("scratch directory already closed"))
    }

    fn close(&mut self) {
        self.inner = None;
    }
}

#[pyfunction]
fn _scratch_dir(py: Python<'_>) -> PyResult<PyScratch> {
    let scratch = run(py, || scratch_base(None)?.create())?;
    Ok(PyScratch {
        inner: Some(scratch),
    })
}

/// The kernel `kernel` as an uncompressed `vmlinux` with a PVH entry,
/// cached in `cache` (see `boot::pvh`): `(path, None)`, or `(None, why)`
/// when it cannot be booted that way.
#[pyfunction]
fn _pvh_kernel(
    py: Python<'_>,
    kernel: PathBuf,
    cache: PathBuf,
) -> PyResult<(Option<PathBuf>, Option<String>)> {
    let found = run(py, || crate::boot::pvh::cached_vmlinux(&kernel, &cache))?;
    Ok(match found {
        Ok(path) => (Some(path), None),
        Err(why) => (None, Some(why)),
    })
}

/// `dest`: the initrd `base` with the command and input files
/// (`(guest path, host path)`) appended for `supermin.run=@`, and the
/// drivers of the output disk (`outputs`) and of a 9p share mounted at
/// `share`, from the module directory of `kernel` (or `modules`).
#[pyfunction]
#[pyo3(signature = (base, dest, command, files, kernel, *, outputs=false, share=None, modules=None))]
#[allow(clippy::too_many_arguments)]
fn _run_initrd(
    py: Python<'_>,
    base: PathBuf,
    dest: PathBuf,
    command: String,
    files: Vec<(PathBuf, PathBuf)>,
    kernel: PathBuf,
    outputs: bool,
    share: Option<PathBuf>,
    modules: Option<PathBuf>,
) -> PyResult<()> {
    use crate::boot::run;
    let inputs: Vec<run::Input> = files
        .into_iter()
        .map(|(guest, host)| run::Input { guest, host })
        .collect();
    run(py, || {
        let mut channels = run::Channels {
            outputs,
            share,
            modules: None,
        };
        if channels.outputs || channels.share.is_some() {
            channels.modules = Some(run::modules_directory(&kernel, modules.as_deref())?);
        }
        run::write_run_initrd(&base, &dest, &command, &inputs, &channels)
    })
}

/// The files the appliance wrote back on the output `disk`, into `dest`
/// (relative paths of what was written, in archive order).
#[pyfunction]
fn _read_outputs(py: Python<'_>, disk: PathBuf, dest: PathBuf) -> PyResult<Vec<PathBuf>> {
    run_with(py, 0, None, |reporter| {
        crate::boot::run::read_outputs(&disk, &dest, reporter)
    })
}

/// Refuse, before a run boots, an outputs directory it may not replace.
#[pyfunction]
fn _check_outputs_dir(dest: PathBuf) -> PyResult<()> {
    crate::boot::run::check_outputs_dir(&dest).map_err(to_py)
}

/// Make `dir` (0700) if no one but root and this user can change it or
/// what its path leads to (`output::private_dir`): `None`, or why not.
#[pyfunction]
fn _private_dir(dir: PathBuf) -> Option<String> {
    crate::output::private_dir(&dir).err()
}

/// `(name, aliases, summary, outputs)` of every output format, from the
/// core's registry (for `--help`, argument checks and the stubs' test).
#[pyfunction]
fn _formats() -> Vec<(
    &'static str,
    Vec<&'static str>,
    &'static str,
    Vec<&'static str>,
)> {
    crate::format::FORMATS
        .iter()
        .map(|f| {
            (
                f.name(),
                f.aliases().to_vec(),
                f.summary(),
                f.outputs().to_vec(),
            )
        })
        .collect()
}

/// When the package database of `root` last changed (seconds since the
/// epoch), from its files' times alone: nothing is parsed.
#[pyfunction]
#[pyo3(signature = (root = PathBuf::from("/")), text_signature = "(root='/')")]
fn _database_mtime(root: PathBuf) -> PyResult<Option<f64>> {
    let state = backend::database_state(&root, None).map_err(to_py)?;
    Ok(state.newest().map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }))
}

/// `(driver, detected)` pairs for `--list-drivers`.
#[pyfunction]
#[pyo3(signature = (root = PathBuf::from("/")), text_signature = "(root='/')")]
fn _list_drivers(root: PathBuf) -> PyResult<Vec<(&'static str, bool)>> {
    backend::list_drivers(&root).map_err(to_py)
}

#[pymodule]
fn _supermin(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Names the Python layer shares with the core and the mini init.
    m.add("_STAMP_FILE", crate::stamp::FILE_NAME)?;
    m.add(
        "_OUTPUT_DISK_SERIAL",
        crate::boot::protocol::OUTPUT_DISK_SERIAL,
    )?;
    m.add("_SHARE_TAG", crate::boot::protocol::SHARE_TAG)?;
    m.add("SuperminError", py.get_type::<SuperminError>())?;
    m.add("UsageError", py.get_type::<UsageError>())?;
    m.add(
        "PackageNotFoundError",
        py.get_type::<PackageNotFoundError>(),
    )?;
    m.add("ApplianceError", py.get_type::<ApplianceError>())?;
    m.add("BackendError", py.get_type::<BackendError>())?;
    m.add("KernelError", py.get_type::<KernelError>())?;
    m.add("OutputError", py.get_type::<OutputError>())?;
    m.add_class::<PyBackend>()?;
    m.add_class::<PyPackage>()?;
    m.add_class::<PyAppliance>()?;
    m.add_function(wrap_pyfunction!(_prepare, m)?)?;
    m.add_function(wrap_pyfunction!(_recorded, m)?)?;
    m.add_function(wrap_pyfunction!(_os_release_id, m)?)?;
    m.add_function(wrap_pyfunction!(_build, m)?)?;
    m.add_function(wrap_pyfunction!(_list_drivers, m)?)?;
    m.add_function(wrap_pyfunction!(_formats, m)?)?;
    m.add_function(wrap_pyfunction!(_pvh_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(_private_dir, m)?)?;
    m.add_function(wrap_pyfunction!(_run_initrd, m)?)?;
    m.add_function(wrap_pyfunction!(_read_outputs, m)?)?;
    m.add_function(wrap_pyfunction!(_check_outputs_dir, m)?)?;
    m.add_function(wrap_pyfunction!(_database_mtime, m)?)?;
    m.add_function(wrap_pyfunction!(_set_messages, m)?)?;
    m.add_function(wrap_pyfunction!(_scratch_dir, m)?)?;
    m.add_class::<PyScratch>()?;
    m.add_class::<PyBuilt>()?;
    Ok(())
}
