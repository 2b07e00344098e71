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
#include <unistd.h>

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

// The program posix_spawn (`search` 0) or posix_spawnp (`search` 1, along this process's PATH, as glibc searches)
// would run, if it is there and executable; 0 otherwise (the caller then spawns as asked, and the spawn fails).
int vmsp_trampoline_program(const char *file, int search, char *out, size_t capacity) {
    if (!search || strchr(file, '/')) {
        if (strlen(file) >= capacity) return 0;
        strcpy(out, file);
        return access(out, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";
    for (const char *at = path;; at++) {
        const char *end = strchr(at, ':');
        size_t length = end ? (size_t)(end - at) : strlen(at);
        int n = snprintf(out, capacity, "%.*s%s%s", (int)length, at, length ? "/" : "", file);
        if (n > 0 && (size_t)n < capacity && access(out, X_OK) == 0) return 1;
        if (!end) return 0;
        at = end;
    }
}

// Whether `path` is a static ELF program (no interpreter: LD_PRELOAD means nothing to it). Scripts and anything
// unreadable count as not static: their interpreter, or the kernel's refusal, decides.
int vmsp_program_is_static(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    Elf64_Ehdr header;
    int is_static = 0;
    if (pread(fd, &header, sizeof header, 0) == (ssize_t)sizeof header && memcmp(header.e_ident, ELFMAG, SELFMAG) == 0 &&
        header.e_ident[EI_CLASS] == ELFCLASS64 && header.e_phentsize == sizeof(Elf64_Phdr) && header.e_phnum < 256) {
        Elf64_Phdr entries[256];
        size_t size = (size_t)header.e_phnum * sizeof(Elf64_Phdr);
        if (pread(fd, entries, size, (off_t)header.e_phoff) == (ssize_t)size) {
            is_static = 1;
            for (int i = 0; i < header.e_phnum; i++) if (entries[i].p_type == PT_INTERP) is_static = 0;
        }
    }
    REAL(close)(fd);
    return is_static;
}
