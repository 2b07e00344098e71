// posix_spawn of a program that will not load this library: its environment has no LD_PRELOAD of ours (a program
// cleared it) or the program is static. No constructor of ours runs there to put the relays' sockets in place
// (exec.c), and the program would read the connections' wake-up bytes as data. So the spawn runs vmsock-run
// instead (the one next to this library), with this library preloaded: its constructor puts the relays in place,
// and vmsock-run then execs the program with the environment it was given (vmsock-run's `--spawned`).
#include "preload.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__)
static const int own_machine = EM_X86_64;
#elif defined(__aarch64__)
static const int own_machine = EM_AARCH64;
#else
static const int own_machine = -1;  // unknown: every ELF program counts as one of another machine
#endif

// This library's path, and vmsock-run's next to it; 0 when either is not there.
int vmsp_trampoline_paths(char *library, char *runner, size_t capacity) {
    Dl_info info;
    if (!dladdr((void *)vmsp_trampoline_paths, &info) || !info.dli_fname || info.dli_fname[0] != '/') return 0;
    const char *slash = strrchr(info.dli_fname, '/');
    size_t directory = (size_t)(slash - info.dli_fname);
    if (strlen(info.dli_fname) >= capacity || directory + sizeof "/vmsock-run" > capacity) return 0;
    strcpy(library, info.dli_fname);
    memcpy(runner, info.dli_fname, directory);
    memcpy(runner + directory, "/vmsock-run", sizeof "/vmsock-run");
    return access(runner, X_OK) == 0;
}

// Whether `path` is a regular file this process may execute (its effective ids, as exec checks).
static int runnable(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 && S_ISREG(info.st_mode) && faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0;
}

// The program posix_spawn (`search` 0) or posix_spawnp (`search` 1, along this process's PATH, as glibc searches)
// would run, if it is there and executable; 0 otherwise (the caller then spawns as asked, and the spawn fails).
int vmsp_trampoline_program(const char *file, int search, char *out, size_t capacity) {
    if (!*file) return 0;
    if (!search || strchr(file, '/')) {
        if (strlen(file) >= capacity) return 0;
        strcpy(out, file);
        return runnable(out);
    }
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";
    for (const char *at = path;; at++) {
        const char *end = strchr(at, ':');
        size_t length = end ? (size_t)(end - at) : strlen(at);
        int n = snprintf(out, capacity, "%.*s%s%s", (int)length, at, length ? "/" : "", file);
        if (n > 0 && (size_t)n < capacity && runnable(out)) return 1;
        if (!end) return 0;
        at = end;
    }
}

// Whether the ELF program at `path` will not load this library: a static one (no interpreter, so LD_PRELOAD means
// nothing to it), or one of another class or machine (the loader skips this library for it). Scripts, and
// anything that cannot be read as ELF, count as loading it: their interpreter, or exec's refusal, decides.
int vmsp_program_skips_preload(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return 0;
    struct stat info;
    Elf64_Ehdr header;
    int skips = 0;
    int elf = fstat(fd, &info) == 0 && S_ISREG(info.st_mode) &&
              pread(fd, &header, sizeof header, 0) == (ssize_t)sizeof header &&
              memcmp(header.e_ident, ELFMAG, SELFMAG) == 0;
    if (elf) {
        if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_machine != own_machine) {
            skips = 1;
        } else if (header.e_phentsize == sizeof(Elf64_Phdr) && header.e_phnum > 0) {
            skips = 1;  // until an interpreter is found
            Elf64_Phdr entries[16];
            for (int first = 0; first < header.e_phnum && skips; first += 16) {
                int count = header.e_phnum - first < 16 ? header.e_phnum - first : 16;
                size_t size = (size_t)count * sizeof(Elf64_Phdr);
                off_t at = (off_t)header.e_phoff + (off_t)first * (off_t)sizeof(Elf64_Phdr);
                if (pread(fd, entries, size, at) != (ssize_t)size) {
                    skips = 0;  // unreadable: exec decides
                    break;
                }
                for (int i = 0; i < count; i++) if (entries[i].p_type == PT_INTERP) skips = 0;
            }
        }
    }
    REAL(close)(fd);
    return skips;
}
