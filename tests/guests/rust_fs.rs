// rust_fs.rs — a program built by Rust's standard library for WASI
// (Debian's rustc, --target wasm32-wasi): what ordinary Rust code does with
// a granted directory through std::fs, each step printed, a panic on the
// first that fails. Run as: rust_fs.wasm DIR (a preopen).
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};

fn main() {
    let base = std::env::args().nth(1).expect("usage: rust_fs DIR");
    let mut names: Vec<String> = fs::read_dir(&base)
        .expect("read_dir")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    println!("entries: {:?}", names);
    fs::create_dir_all(format!("{}/sub/deeper", base)).expect("create_dir_all");
    let p = format!("{}/sub/deeper/hello.txt", base);
    fs::File::create(&p).expect("create").write_all(b"hi from rust\n").expect("write");
    let mut f = fs::OpenOptions::new().read(true).append(true).open(&p).expect("open to append");
    f.write_all(b"and more\n").expect("append");
    f.seek(SeekFrom::Start(0)).expect("seek");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read");
    print!("read back: {}", s);
    println!("sub is a dir: {}", fs::metadata(format!("{}/sub", base)).expect("metadata").is_dir());
    let d = fs::File::open(format!("{}/sub", base)).expect("open a directory as a file");
    println!("opened dir is a dir: {}", d.metadata().unwrap().is_dir());
    let inner: Vec<_> = fs::read_dir(format!("{}/sub", base)).expect("read_dir sub").collect();
    println!("sub holds {}", inner.len());
    // many entries: read_dir takes several fd_readdir calls, and
    // remove_dir_all below removes them while it reads
    fs::create_dir(format!("{}/sub/many", base)).expect("create_dir");
    for i in 0..300 {
        fs::write(format!("{}/sub/many/a_file_with_a_long_name_{}", base, i), b"x").expect("write many");
    }
    println!("many: {}", fs::read_dir(format!("{}/sub/many", base)).expect("read_dir many").count());
    fs::rename(&p, format!("{}/sub/moved.txt", base)).expect("rename");
    println!("moved: {}", fs::read_to_string(format!("{}/sub/moved.txt", base)).expect("read moved").len());
    fs::remove_file(format!("{}/sub/moved.txt", base)).expect("remove_file");
    fs::remove_dir_all(format!("{}/sub", base)).expect("remove_dir_all");
    println!("outside the grant: {}", fs::read_dir("/etc").is_err());
    println!("done");
}
