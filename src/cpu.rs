//! Whether this CPU can run the binary's Whisper.
//!
//! whisper.cpp (ggml) is compiled for the CPU of the machine that builds it
//! (`-march=native`): on this project's build machines that means AVX-512. ggml has no
//! runtime dispatch when it is linked statically, as whisper-rs links it, so such a
//! binary dies with SIGILL at the first transcription on a CPU without those
//! instructions. The container image records the instruction-set extensions its build
//! used in a file named by `SOFIA_BUILD_CPU_FLAGS_FILE`; `serve` checks them against
//! this CPU before it starts and refuses with the fix instead of crashing mid-call.

use std::path::Path;

/// The environment variable naming the file of required CPU flags.
pub const FLAGS_FILE_ENV: &str = "SOFIA_BUILD_CPU_FLAGS_FILE";

/// The x86 extensions a compiler may use under `-march=native` that not every x86-64
/// CPU has (names as /proc/cpuinfo spells them). Other flags of the build machine
/// (virtualisation, power management) say nothing about the code.
pub const CODEGEN_FLAGS: &[&str] = &[
    "sse3",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "popcnt",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi1",
    "bmi2",
    "avx_vnni",
    "avx512f",
    "avx512cd",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512ifma",
    "avx512vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
];

/// The flags on the first `flags` line of a /proc/cpuinfo text.
pub fn cpuinfo_flags(cpuinfo: &str) -> Vec<&str> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "flags").then_some(value)
        })
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default()
}

/// The code-generation flags of `required` (whitespace-separated) that `available`
/// lacks.
pub fn missing<'a>(required: &'a str, available: &[&str]) -> Vec<&'a str> {
    required
        .split_whitespace()
        .filter(|f| CODEGEN_FLAGS.contains(f) && !available.contains(f))
        .collect()
}

/// Checks the flags recorded in `flags_file` against this machine's /proc/cpuinfo.
pub fn check(flags_file: &Path) -> anyhow::Result<()> {
    let required = std::fs::read_to_string(flags_file).map_err(|e| {
        anyhow::anyhow!(
            "{FLAGS_FILE_ENV} names {}, which cannot be read: {e}; unset it to skip the CPU check",
            flags_file.display()
        )
    })?;
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return Ok(()); // not Linux/x86 as we know it: nothing to compare with
    };
    let lacking = missing(&required, &cpuinfo_flags(&cpuinfo));
    if lacking.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "this build of sofia-phone was compiled for a CPU with {} (the machine that built it), \
         and this CPU lacks them; Whisper would crash at the first call. Build the image on \
         this machine, or build it for any x86-64-v3 CPU with \
         `docker build --build-arg SOFIA_CPU=portable .` (the flags came from {})",
        lacking.join(" "),
        flags_file.display()
    )
}

/// The check `serve` runs: only when the build recorded its flags.
pub fn check_from_env() -> anyhow::Result<()> {
    match std::env::var_os(FLAGS_FILE_ENV) {
        Some(path) if !path.is_empty() => check(Path::new(&path)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
        flags\t\t: fpu sse3 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2 hypervisor\n\
        bugs\t\t: spectre_v1\n";

    #[test]
    fn flags_come_from_the_flags_line() {
        let flags = cpuinfo_flags(CPUINFO);
        assert!(flags.contains(&"avx2") && flags.contains(&"hypervisor"));
        assert!(!flags.contains(&"spectre_v1"));
    }

    #[test]
    fn only_missing_code_generation_flags_count() {
        let available = cpuinfo_flags(CPUINFO);
        // The build machine had AVX-512 and virtualisation flags this one lacks; only
        // the instruction sets matter.
        let required = "sse4_2 avx2 fma avx512f avx512bw vmx constant_tsc\n";
        assert_eq!(missing(required, &available), ["avx512f", "avx512bw"]);
        assert!(missing("avx avx2 fma f16c", &available).is_empty());
    }

    #[test]
    fn an_unreadable_flags_file_is_named_in_the_error() {
        let err = check(Path::new("/nonexistent/build-cpu-flags")).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("/nonexistent/build-cpu-flags") && text.contains(FLAGS_FILE_ENV),
            "{text}"
        );
    }
}
