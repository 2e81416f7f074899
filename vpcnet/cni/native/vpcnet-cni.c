/*
 * vpcnet-cni, native fast path (optional: `vpcnet install-cni --native`, needs a C compiler).
 *
 * The same client as vpcnet/cni/shim.py for the common case, without an interpreter's start-up (~9 ms of
 * CPython before one line of the shim runs): CNI_* variables and stdin go to the agent's unix socket in
 * the shim's framing, the answer is printed. Everything else -- VERSION, an unknown command, an agent that
 * cannot be reached or answers nothing -- is handed to the Python shim (exec, with stdin replayed from a
 * memfd), so the spec's errors have one implementation.
 *
 * Built once with no options (`cc -O2 -static -o vpcnet-cni-native vpcnet-cni.c`: the image ships such a
 * binary), then stamped by install-cni: the interpreter, the shim's directory and the agent's socket are
 * written into the three slots below in the installed copy (vpcnet/cni/nativeclient.py), so one binary
 * serves any install path and a node needs no compiler.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#define MAX_STDIN (4 << 20)
#define PROTOCOL "VPCNET-CNI/1\n"

extern char **environ;

/* Slots install-cni fills: a marker, then NUL padding to SLOT_SIZE bytes (the value, NUL-terminated, replaces
 * marker and padding). Not static and read through launder() below, so the compiler cannot fold the marker. */
#define SLOT_SIZE 512
char vpcnet_slot_python[SLOT_SIZE] = "@VPCNET-SLOT:python@";
char vpcnet_slot_shim_dir[SLOT_SIZE] = "@VPCNET-SLOT:shim_dir@";
char vpcnet_slot_socket[SLOT_SIZE] = "@VPCNET-SLOT:socket@";

static const char *launder(const char *p) {
    __asm__("" : "+r"(p));
    return p;
}

static char *input;
static size_t input_len;

static void fallback(void) {
    /* Replay what was read from stdin, then let the Python shim answer. */
    if (input_len > 0) {
        int fd = memfd_create("vpcnet-cni-stdin", 0);
        if (fd >= 0 && write(fd, input, input_len) == (ssize_t)input_len && lseek(fd, 0, SEEK_SET) == 0) {
            dup2(fd, 0);
        }
    }
    static char code[3 * SLOT_SIZE];
    const char *python = launder(vpcnet_slot_python);
    snprintf(code, sizeof code, "import sys; sys.path.insert(0, '%s'); from shim import main; main('%s')",
             launder(vpcnet_slot_shim_dir), launder(vpcnet_slot_socket));
    char *argv[] = {(char *)python, "-IS", "-c", code, NULL};
    if (python[0] == '/') execv(python, argv); /* an unstamped binary has no interpreter: the error below */
    static const char msg[] = "{\"cniVersion\": \"1.1.0\", \"code\": 999, \"msg\": \"vpcnet-cni: cannot run python\"}\n";
    (void)!write(1, msg, sizeof msg - 1);
    _exit(1);
}

static int read_stdin(void) {
    size_t cap = 65536;
    input = malloc(cap);
    if (!input) return -1;
    for (;;) {
        if (input_len == cap) {
            if (cap > MAX_STDIN) return 0;
            cap *= 2;
            char *more = realloc(input, cap);
            if (!more) return -1;
            input = more;
        }
        ssize_t n = read(0, input + input_len, cap - input_len);
        if (n < 0) return -1;
        if (n == 0) return 0;
        input_len += (size_t)n;
    }
}

static int send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(void) {
    const char *command = getenv("CNI_COMMAND");
    static const char *remote[] = {"ADD", "DEL", "CHECK", "STATUS", "GC", NULL};
    int known = 0;
    for (int i = 0; command && remote[i]; i++) known |= strcmp(command, remote[i]) == 0;
    if (!known) fallback();

    const char *path = getenv("VPCNET_AGENT_SOCKET");
    if (!path || !*path) path = launder(vpcnet_slot_socket);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) fallback();
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) fallback();
    struct timeval timeout = {.tv_sec = 120};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (read_stdin() != 0) fallback();

    /* The request: protocol line, NUL-terminated CNI_* variables, an empty entry, the raw stdin. */
    if (send_all(fd, PROTOCOL, sizeof PROTOCOL - 1) != 0) fallback();
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CNI_", 4) == 0 && send_all(fd, *e, strlen(*e) + 1) != 0) fallback();
    }
    if (send_all(fd, "", 1) != 0 || send_all(fd, input, input_len) != 0) fallback();
    shutdown(fd, SHUT_WR);

    /* The answer: "<exit code>\n" then the text to print. */
    size_t cap = 65536, len = 0;
    char *answer = malloc(cap);
    if (!answer) fallback();
    for (;;) {
        if (len == cap) {
            cap *= 2;
            char *more = realloc(answer, cap);
            if (!more) fallback();
            answer = more;
        }
        ssize_t n = read(fd, answer + len, cap - len);
        if (n < 0) fallback();
        if (n == 0) break;
        len += (size_t)n;
    }
    char *nl = memchr(answer, '\n', len);
    if (!nl || nl == answer) fallback();
    int code = 0;
    for (char *p = answer; p < nl; p++) {
        if (*p < '0' || *p > '9') fallback();
        code = code * 10 + (*p - '0');
    }
    if (send_all(1, nl + 1, len - (size_t)(nl + 1 - answer)) != 0) return 1;
    return code;
}
