/* reactor: a circus-linux plugin in C over libzmq, speaking only the wire contract of docs/PLUGINS.md.
 *
 * It logs every event it receives ("<topic> <json>" per line) to LOGFILE and, each time an event's topic
 * equals TOPIC, sends REQUEST (a full control message, JSON) to circusd and logs "reply <json>".
 * Example: keep a watcher running whatever stops it:
 *   [plugin:reactor]
 *   cmd = /usr/local/bin/circus-reactor
 *   args = /var/log/reactor.log watcher.web.stop '{"id": "r1", "command": "start", "properties": {"name": "web"}}'
 * Endpoints come from CIRCUS_ENDPOINT and CIRCUS_PUBSUB_ENDPOINT; CIRCUS_PLUGIN_OPTIONS (JSON) is logged.
 * Build: cc -O2 -Wall -o circus-reactor reactor.c -lzmq     (Debian: apt install libzmq3-dev)
 * Exit: 0 on SIGTERM/SIGINT (what circusd sends to stop a plugin), 1 on a setup error.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) { (void)sig; stopping = 1; }

/* Receive one frame as a NUL-terminated string; NULL on error (EINTR included). */
static char *recv_string(void *sock, int *more) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, sock, 0) < 0) {
        zmq_msg_close(&msg);
        return NULL;
    }
    size_t len = zmq_msg_size(&msg);
    char *out = malloc(len + 1);
    if (out != NULL) {
        memcpy(out, zmq_msg_data(&msg), len);
        out[len] = '\0';
    }
    if (more != NULL)
        *more = zmq_msg_more(&msg);
    zmq_msg_close(&msg);
    return out;
}

/* One request/reply on the DEALER: send REQUEST, wait up to 5 s for one reply frame. */
static void call(void *dealer, const char *request, FILE *log) {
    if (zmq_send(dealer, request, strlen(request), 0) < 0) {
        fprintf(log, "error send: %s\n", zmq_strerror(errno));
        return;
    }
    zmq_pollitem_t item = {dealer, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 5000) <= 0) {
        fprintf(log, "error no reply\n");
        return;
    }
    char *reply = recv_string(dealer, NULL);
    fprintf(log, "reply %s\n", reply ? reply : "(none)");
    free(reply);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s LOGFILE [TOPIC REQUEST]\n", argv[0]);
        return 1;
    }
    const char *endpoint = getenv("CIRCUS_ENDPOINT");
    const char *pubsub = getenv("CIRCUS_PUBSUB_ENDPOINT");
    const char *options = getenv("CIRCUS_PLUGIN_OPTIONS");
    if (endpoint == NULL || pubsub == NULL) {
        fprintf(stderr, "reactor: CIRCUS_ENDPOINT and CIRCUS_PUBSUB_ENDPOINT must be set\n");
        return 1;
    }
    FILE *log = fopen(argv[1], "a");
    if (log == NULL) {
        perror(argv[1]);
        return 1;
    }
    setvbuf(log, NULL, _IOLBF, 0); /* one line per event, visible at once */
    fprintf(log, "options %s\n", options ? options : "{}");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked zmq_poll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "watcher.", strlen("watcher."));
    if (zmq_connect(sub, pubsub) != 0 || zmq_connect(dealer, endpoint) != 0) {
        fprintf(stderr, "reactor: connect: %s\n", zmq_strerror(errno));
        return 1;
    }
    fprintf(log, "listening\n");

    while (!stopping) {
        zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&item, 1, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        int more = 0;
        char *topic = recv_string(sub, &more);
        char *body = more ? recv_string(sub, &more) : NULL;
        while (more) { /* never expected: drain extra frames of a message */
            free(recv_string(sub, &more));
        }
        if (topic != NULL) {
            fprintf(log, "%s %s\n", topic, body ? body : "");
            if (argc >= 4 && strcmp(topic, argv[2]) == 0)
                call(dealer, argv[3], log);
        }
        free(topic);
        free(body);
    }
    fprintf(log, "stopping\n");
    fclose(log);
    zmq_close(sub);
    zmq_close(dealer);
    zmq_ctx_term(ctx);
    return 0;
}
