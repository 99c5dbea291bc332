//! The mini init that runs first inside a supermin ext2 appliance.
//!
//! The kernel unpacks the initrd (this program as `/init`, a `/modules`
//! list and the listed kernel modules) and runs it. Its job is only to make
//! the real root disk reachable and hand over to it:
//!
//! 1. mount /proc and /sys (`quiet` on the kernel command line silences it);
//! 2. load each module named in `/modules`, in order (failures are printed,
//!    not fatal: a module for absent hardware may refuse to load);
//! 3. find the root disk named by `root=/dev/NAME` or `root=UUID=...`,
//!    waiting for it to appear;
//! 4. mount it as ext2 on /root, delete the initramfs files (they would
//!    otherwise pin their memory for the life of the appliance), chroot
//!    into it and exec its `/init`.
//!
//! With `supermin.modules=root` on the command line (beyond upstream;
//! `boot()` passes it), step 2 loads only `/modules.vd` or `/modules.sd`,
//! the modules that find a `root=/dev/vdX` or `/dev/sdX` disk and mount
//! it, and the rest of `/modules` only if the disk has not appeared after
//! [`ROOT_FAST_WAIT`]: loading all of them costs over a second under TCG.
//!
//! In an initramfs appliance (the `initramfs` format) the whole tree is
//! already unpacked under `/root`, next to this program and the marker
//! file `/supermin-initramfs`: there is no disk to find, so steps 2-4
//! become "chroot into /root and exec its `/init`".
//!
//! Beyond upstream, `supermin.run=HEX` (a hex-encoded shell command) runs
//! that command with the appliance's `/bin/sh` instead of its `/init`,
//! between two marker lines, and powers off: this is what
//! `BuildResult.boot()` in the Python API uses, so any appliance with a
//! shell can be tried out without writing an init for it.
//! `supermin.run=@` takes the command, input files, drivers, a share's
//! mount point and the request for output files from the archive
//! `supermin.run()` appends to the initrd (`src/boot/run.rs`); output
//! files go back as a newc archive written onto the disk whose serial is
//! `supermin-out`.
//!
//! It is compiled with plain `rustc` by the project's `build.rs` as a
//! static executable and embedded into the library, so it uses only `std`
//! and the few libc calls `std` does not wrap.

// The names both sides agree on, and the one cpio writer.
#[allow(dead_code)]
#[path = "../src/boot/protocol.rs"]
mod protocol;
#[allow(dead_code)]
#[path = "../src/boot/cpio.rs"]
mod cpio;

use std::ffi::{c_char, c_int, c_ulong, c_void, CString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{exit, Command};
use std::thread::sleep;
use std::time::{Duration, Instant};

extern "C" {
    fn mount(
        source: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn umount(target: *const c_char) -> c_int;
    fn mknod(path: *const c_char, mode: u32, dev: u64) -> c_int;
    fn init_module(image: *const c_void, len: c_ulong, params: *const c_char) -> c_int;
    fn reboot(how: c_int) -> c_int;
    fn sync();
}

/// Markers around the output of a `supermin.run=` command.
const RUN_BEGIN: &str = "supermin-run: begin";
const RUN_END: &str = "supermin-run: end, exit status";
const RB_POWER_OFF: c_int = 0x4321fedc;

const MS_NOATIME: c_ulong = 1024;
const O_NOFOLLOW: i32 = 0o400000;
const O_NONBLOCK: i32 = 0o4000;
const S_IFBLK: u32 = 0o060000;
/// How long to wait for the root disk before giving up.
const ROOT_WAIT: Duration = Duration::from_secs(300);
/// Offset of the 16-byte filesystem UUID in an ext2/3/4 disk.
const EXT2_UUID_OFFSET: u64 = 0x468;
/// How long the root disk may take to appear with only its own modules
/// loaded before the others are loaded too.
const ROOT_FAST_WAIT: Duration = Duration::from_secs(2);
/// How long a run's output disk or share may take to appear.
const CHANNEL_WAIT: Duration = Duration::from_secs(10);

struct Init {
    quiet: bool,
    started: Instant,
}

impl Init {
    fn say(&self, message: &str) {
        if !self.quiet {
            eprintln!("supermin: {message}");
        }
    }
}

/// Print what failed and stop: the kernel then panics with "Attempted to
/// kill init", which is the right outcome for an appliance that cannot boot.
fn die(what: &str, error: impl std::fmt::Display) -> ! {
    eprintln!("supermin: {what}: {error}");
    exit(1);
}

fn c_string(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| die("bad string", s))
}

fn sys_mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: c_ulong,
    data: &str,
) -> io::Result<()> {
    let (source, target, fstype, data) = (
        c_string(source),
        c_string(target),
        c_string(fstype),
        c_string(data),
    );
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn make_block_device(path: &str, major: u32, minor: u32) -> io::Result<()> {
    let _ = fs::remove_file(path);
    // The glibc makedev encoding, spelled out because it is a macro in C.
    let dev = ((major as u64 & 0xfffff000) << 32)
        | ((major as u64 & 0xfff) << 8)
        | ((minor as u64 & 0xffffff00) << 12)
        | (minor as u64 & 0xff);
    let p = c_string(path);
    // SAFETY: p is a valid path.
    if unsafe { mknod(p.as_ptr(), S_IFBLK | 0o600, dev) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn load_module(init: &Init, path: &str) {
    init.say(&format!("loading module {path}"));
    let image = match fs::read(path) {
        Ok(image) => image,
        Err(e) => return eprintln!("supermin: {path}: {e}"),
    };
    let no_params = c_string("");
    // SAFETY: image is a live buffer of the given length.
    if unsafe {
        init_module(
            image.as_ptr().cast(),
            image.len() as c_ulong,
            no_params.as_ptr(),
        )
    } != 0
    {
        let error = io::Error::last_os_error();
        // The kernel's errno values mean something specific here.
        let why = match error.raw_os_error() {
            Some(8) => {
                "invalid module format (compressed, or built for another kernel?)".to_string()
            }
            Some(2) => "unknown symbol in module (a dependency is missing?)".to_string(),
            Some(17) => return, // already loaded or built in
            Some(19) => return init.say(&format!("{path}: no such device here")),
            _ => error.to_string(),
        };
        eprintln!("supermin: loading {path}: {why}");
    }
}

/// `major:minor` from a sysfs `dev` file.
fn read_dev_file(path: &Path) -> Option<(u32, u32)> {
    let text = fs::read_to_string(path).ok()?;
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn parse_uuid(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        die("root=UUID", format!("{text:?} is not a 16-byte UUID"));
    }
    let mut uuid = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).unwrap_or("zz");
        uuid[i] = u8::from_str_radix(digits, 16)
            .unwrap_or_else(|_| die("root=UUID", format!("{text:?} is not hexadecimal")));
    }
    uuid
}

/// The block device whose ext2 superblock carries `uuid`, if any yet.
fn find_by_uuid(uuid: &[u8; 16]) -> Option<(u32, u32)> {
    let mut names: Vec<_> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for dir in names {
        let Some((major, minor)) = read_dev_file(&dir.join("dev")) else {
            continue;
        };
        if make_block_device("/dev/probe", major, minor).is_err() {
            continue;
        }
        let mut found = [0u8; 16];
        let matched = fs::File::open("/dev/probe")
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(EXT2_UUID_OFFSET))?;
                f.read_exact(&mut found)
            })
            .is_ok()
            && &found == uuid;
        let _ = fs::remove_file("/dev/probe");
        if matched {
            return Some((major, minor));
        }
    }
    None
}

/// Poll `probe` with growing delays; if `rest` is given (only some
/// modules were loaded), run it once after [`ROOT_FAST_WAIT`]; a second
/// after that, hint at the usual cause (the disk's driver is not in the
/// initrd).
fn wait_for(
    init: &Init,
    what: &str,
    probe: impl Fn() -> Option<(u32, u32)>,
    mut rest: Option<&dyn Fn()>,
) -> (u32, u32) {
    let mut start = Instant::now();
    let mut delay = Duration::from_millis(1);
    let mut hinted = false;
    loop {
        if let Some(dev) = probe() {
            init.say(&format!("{what} found after {:?}", start.elapsed()));
            return dev;
        }
        if rest.is_some() && start.elapsed() >= ROOT_FAST_WAIT {
            init.say(&format!("{what} not found yet: loading the other modules"));
            if let Some(load) = rest.take() {
                load();
            }
            start = Instant::now();
        }
        if start.elapsed() > ROOT_WAIT {
            die(
                "root device",
                format!("{what} did not appear within {}s", ROOT_WAIT.as_secs()),
            );
        }
        if !hinted && rest.is_none() && start.elapsed() >= Duration::from_secs(1) {
            hinted = true;
            eprintln!(
                "supermin: waiting for {what}; if this never ends, its driver \
                 (e.g. virtio_blk) is probably missing from the initrd's modules"
            );
        }
        sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Remove the initrd's own files: memory the appliance can use instead.
fn delete_initramfs_files() {
    if let Ok(entries) = fs::read_dir("/") {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn decode_hex(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Where `supermin.run=@` finds what `supermin.run()` appended.
fn run_dir() -> std::path::PathBuf {
    Path::new("/").join(protocol::RUN_DIR)
}

/// What a run exchanges with the host besides its command and inputs.
struct Channels {
    outputs: bool,
    share: Option<String>,
}

impl Channels {
    /// As the run directory asks, read before the chroot.
    fn requested() -> Channels {
        let dir = run_dir();
        Channels {
            outputs: dir.join("outputs").exists(),
            share: fs::read_to_string(dir.join("share")).ok(),
        }
    }
}

/// Load the drivers a run brought (`modules/`, in name order).
fn load_run_modules(init: &Init) {
    let Ok(entries) = fs::read_dir(run_dir().join("modules")) else {
        return;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        load_module(init, &path.to_string_lossy());
    }
}

/// Retry `attempt` until it succeeds or [`CHANNEL_WAIT`] passes: a device
/// appears a little after its driver is loaded.
fn retry<T>(mut attempt: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let start = Instant::now();
    loop {
        match attempt() {
            Err(_) if start.elapsed() < CHANNEL_WAIT => sleep(Duration::from_millis(20)),
            other => return other,
        }
    }
}

/// Mount the host's share at `at` (a path in the appliance).
fn mount_share(at: &str) -> io::Result<()> {
    let at = format!("/{at}");
    fs::create_dir_all(&at)?;
    retry(|| {
        sys_mount(
            protocol::SHARE_TAG,
            &at,
            "9p",
            0,
            "trans=virtio,version=9p2000.L,msize=524288",
        )
    })
}

/// The output disk, found by its serial number in /sys/block.
fn output_disk() -> io::Result<fs::File> {
    let name = retry(|| {
        fs::read_dir("/sys/block")?
            .flatten()
            .find(|e| {
                fs::read_to_string(e.path().join("serial"))
                    .is_ok_and(|s| s.trim() == protocol::OUTPUT_DISK_SERIAL)
            })
            .map(|e| e.file_name())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no output disk"))
    })?;
    fs::OpenOptions::new()
        .write(true)
        .open(Path::new("/dev").join(name))
}

/// Write [`protocol::GUEST_OUTPUT_DIR`] as a newc archive onto the output
/// disk: directories (each before what it holds), regular files and
/// symlinks, names relative to it.  If that fails midway the archive's
/// first header is zeroed: the host then reports no outputs (and this
/// console's tail says why), never a partial archive.
fn send_outputs() -> io::Result<u64> {
    let disk = output_disk()?;
    let sent = write_outputs(&disk);
    if sent.is_err() {
        use std::os::unix::fs::FileExt;
        let _ = disk.write_all_at(&[0u8; 110], 0);
        let _ = disk.sync_all();
    }
    sent
}

fn write_outputs(disk: &fs::File) -> io::Result<u64> {
    let mut archive = cpio::Writer::new(io::BufWriter::with_capacity(1 << 20, disk));
    let top = Path::new(protocol::GUEST_OUTPUT_DIR);
    let mut ino = 0;
    let mut pending = vec![top.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        // Popped from the end: reversed, so the archive is in name order.
        for path in entries.iter().rev() {
            if fs::symlink_metadata(path)?.is_dir() {
                pending.push(path.clone());
            }
        }
        for path in entries {
            use std::os::unix::ffi::OsStrExt;
            use std::os::unix::fs::MetadataExt;
            let meta = fs::symlink_metadata(&path)?;
            let name = path.strip_prefix(top).expect("under /out");
            let name = name.as_os_str().as_bytes();
            ino += 1;
            let header = cpio::Header {
                ino,
                mode: meta.mode(),
                nlink: 1,
                ..cpio::Header::default()
            };
            if meta.is_dir() {
                archive.entry(header, name, &[])?;
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path)?;
                archive.entry(header, name, target.as_os_str().as_bytes())?;
            } else if meta.is_file() {
                let size = u32::try_from(meta.len()).map_err(|_| {
                    io::Error::other(format!("{}: over 4 GiB", path.display()))
                })?;
                // Opened without following a symlink or blocking on a
                // FIFO that replaced it since, and checked again.
                use std::os::unix::fs::OpenOptionsExt;
                let file = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(O_NOFOLLOW | O_NONBLOCK)
                    .open(&path)?;
                let now = file.metadata()?;
                if !now.is_file() || now.ino() != meta.ino() {
                    return Err(io::Error::other(format!("{}: changed while sent", path.display())));
                }
                archive.header(&cpio::Header { size, ..header }, name)?;
                archive.data_from(&file, 0, meta.len(), || Ok(()))?;
                archive.end_data()?;
            }
        }
    }
    let (out, length) = archive.finish()?;
    out.into_inner().map_err(|e| e.into_error())?.flush()?;
    disk.sync_all()?;
    Ok(length)
}

/// The command `supermin.run=VALUE` names: hex-encoded, or `@` for
/// the run directory's `command`.
fn run_command_text(value: &str) -> String {
    if value == "@" {
        let path = run_dir().join("command");
        return fs::read_to_string(&path).unwrap_or_else(|e| die(&path.to_string_lossy(), e));
    }
    decode_hex(value).unwrap_or_else(|| die("supermin.run", "not a hex-encoded command"))
}

/// Copy the tree `from` over `to` (directories merged, keeping the modes
/// of those that exist, such as a sticky `/tmp`; files and symlinks
/// replaced), keeping modes.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&source)?;
        if meta.is_dir() {
            if !dest.is_dir() {
                fs::create_dir(&dest)?;
                fs::set_permissions(&dest, meta.permissions())?;
            }
            copy_tree(&source, &dest)?;
        } else {
            let _ = fs::remove_file(&dest);
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&source)?, &dest)?;
            } else {
                fs::copy(&source, &dest)?;
            }
        }
    }
    Ok(())
}

/// Run a `supermin.run=` command in the appliance, then power off.
fn run_command(init: &Init, command: &str, channels: &Channels) -> ! {
    let _ = fs::create_dir_all("/proc");
    let _ = fs::create_dir_all("/sys");
    let _ = fs::create_dir_all("/dev");
    let _ = sys_mount("proc", "/proc", "proc", 0, "");
    let _ = sys_mount("sysfs", "/sys", "sysfs", 0, "");
    let _ = sys_mount("devtmpfs", "/dev", "devtmpfs", 0, "");
    if let Some(at) = &channels.share {
        if let Err(e) = mount_share(at) {
            die(&format!("mounting the share on /{at}"), e);
        }
    }
    if channels.outputs {
        if let Err(e) = fs::create_dir_all(protocol::GUEST_OUTPUT_DIR) {
            die(protocol::GUEST_OUTPUT_DIR, e);
        }
    }
    init.say(&format!(
        "running {command:?} after {:?}",
        init.started.elapsed()
    ));
    println!("\n{RUN_BEGIN}");
    // Appliances without dash (bash and coreutils alone) have no /bin/sh.
    let shell = [
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/bash",
        "/usr/bin/bash",
        "/bin/busybox",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or("/bin/sh");
    let mut sh = Command::new(shell);
    if shell.ends_with("busybox") {
        sh.arg("sh");
    }
    let status = sh
        .arg("-c")
        .arg(&command)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .status();
    let code = match status {
        Ok(s) => s.code().unwrap_or(128),
        Err(e) => {
            eprintln!("supermin: cannot run {shell} in the appliance: {e}");
            127
        }
    };
    if channels.outputs {
        match send_outputs() {
            Ok(bytes) => init.say(&format!("output files sent ({bytes} bytes)")),
            Err(e) => eprintln!("supermin: sending {}: {e}", protocol::GUEST_OUTPUT_DIR),
        }
    }
    println!("\n{RUN_END} {code}");
    // SAFETY: plain syscalls; reboot only returns on failure.
    unsafe {
        sync();
        reboot(RB_POWER_OFF);
    }
    exit(code);
}

fn main() {
    if fs::metadata("/proc/self").is_err() {
        let _ = fs::create_dir("/proc");
        if let Err(e) = sys_mount("proc", "/proc", "proc", 0, "") {
            die("mount /proc", e);
        }
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let args: Vec<&str> = cmdline.split_whitespace().collect();
    let init = Init {
        quiet: args.contains(&"quiet"),
        started: Instant::now(),
    };
    init.say(&format!(
        "mini init {} starting; cmdline: {}",
        env!("SUPERMIN_VERSION"),
        cmdline.trim()
    ));
    if let Ok(uptime) = fs::read_to_string("/proc/uptime") {
        init.say(&format!(
            "uptime {}",
            uptime.split_whitespace().next().unwrap_or("?")
        ));
    }

    if Path::new("/").join(protocol::INITRAMFS_MARKER).exists() {
        init.say("the appliance is this initramfs: no root disk to find");
        enter_appliance(&init, &args);
    }
    for dir in ["/dev", "/root", "/sys"] {
        let _ = fs::create_dir(dir);
    }
    if let Err(e) = sys_mount("sysfs", "/sys", "sysfs", 0, "") {
        die("mount /sys", e);
    }

    let Some(root) = args.iter().rev().find_map(|a| a.strip_prefix("root=")) else {
        die(
            "kernel command line",
            "no root= parameter (use root=/dev/vda or root=UUID=...)",
        );
    };
    let modules = fs::read_to_string("/modules").unwrap_or_else(|e| die("/modules", e));
    let all: Vec<&str> = modules.lines().filter(|l| !l.is_empty()).collect();
    // The root disk's own modules first, when asked and its kind is known.
    let first = args
        .contains(&"supermin.modules=root")
        .then(|| root.strip_prefix("/dev/"))
        .flatten()
        .and_then(|name| ["vd", "sd"].into_iter().find(|k| name.starts_with(k)))
        .and_then(|kind| fs::read_to_string(format!("/modules.{kind}")).ok());
    let first: Vec<&str> = match &first {
        Some(list) => list.lines().filter(|l| !l.is_empty()).collect(),
        None => all.clone(),
    };
    for module in &first {
        load_module(&init, module);
    }
    let others: Vec<&str> = all.iter().filter(|m| !first.contains(m)).copied().collect();
    let init_ref = &init;
    let rest_loaded = std::cell::Cell::new(others.is_empty());
    let load_rest = || {
        if !rest_loaded.replace(true) {
            for module in &others {
                load_module(init_ref, module);
            }
        }
    };
    let rest = (!rest_loaded.get()).then_some(&load_rest as &dyn Fn());
    let mut options = "";
    let (major, minor) = if let Some(name) = root.strip_prefix("/dev/") {
        if name.starts_with("pmem") {
            options = "dax";
        }
        let dev_file = Path::new("/sys/block").join(name).join("dev");
        wait_for(&init, root, || read_dev_file(&dev_file), rest)
    } else if let Some(text) = root.strip_prefix("UUID=") {
        let uuid = parse_uuid(text);
        wait_for(&init, root, || find_by_uuid(&uuid), rest)
    } else {
        die(
            "kernel command line",
            format!("root={root} is not root=/dev/NAME or root=UUID=..."),
        );
    };
    init.say(&format!("root device {root} is {major}:{minor}"));

    let sys = c_string("/sys");
    // SAFETY: a valid path.
    if unsafe { umount(sys.as_ptr()) } != 0 {
        die("umount /sys", io::Error::last_os_error());
    }
    if let Err(e) = make_block_device("/dev/root", major, minor) {
        die("mknod /dev/root", e);
    }
    init.say(&format!(
        "mounting /dev/root on /root as ext2 (noatime {options})"
    ));
    let mount_root = || sys_mount("/dev/root", "/root", "ext2", MS_NOATIME, options);
    if let Err(e) = mount_root() {
        if rest_loaded.get() {
            die("mount /dev/root on /root", e);
        }
        // The filesystem may need a module the short list lacks.
        init.say(&format!("mount: {e}: loading the other modules"));
        load_rest();
        if let Err(e) = mount_root() {
            die("mount /dev/root on /root", e);
        }
    }

    delete_initramfs_files();
    enter_appliance(&init, &args);
}

/// Chroot into the appliance at `/root` and run the `supermin.run=`
/// command or the appliance's `/init`.
fn enter_appliance(init: &Init, args: &[&str]) -> ! {
    // Read before the chroot: the run directory is outside the appliance.
    let command = args
        .iter()
        .find_map(|a| a.strip_prefix("supermin.run="))
        .map(run_command_text);
    let inputs = fs::File::open(run_dir().join("in")).ok();
    let channels = Channels::requested();
    if command.is_some() {
        load_run_modules(init);
    }
    if let Err(e) = std::os::unix::fs::chroot("/root").and_then(|()| std::env::set_current_dir("/"))
    {
        die("chroot /root", e);
    }
    if let Some(inputs) = inputs {
        // Copied inside the appliance, so that its own symlinks (an
        // absolute /var/run -> /run) lead where they lead there; read
        // through the descriptor opened outside.
        use std::os::fd::AsRawFd;
        let _ = fs::create_dir_all("/proc");
        let _ = sys_mount("proc", "/proc", "proc", 0, "");
        let from = format!("/proc/self/fd/{}", inputs.as_raw_fd());
        if let Err(e) = copy_tree(Path::new(&from), Path::new("/")) {
            die("copying the run's input files into the appliance", e);
        }
    }
    if let Some(command) = command {
        run_command(init, &command, &channels);
    }
    init.say(&format!(
        "starting the appliance's /init after {:?}",
        init.started.elapsed()
    ));
    let error = Command::new("/init").arg0("init").exec();
    die("exec /init in the appliance", error);
}
