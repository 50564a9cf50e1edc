/* The oracle: Debian cron 3.0pl1's own code, driven by a fake clock.
 *
 * Built by tests/oracle/debian_cron.py from the source package (apt-get source cron):
 * entry.c (load_entry, get_list, get_range, get_number, set_element), misc.c (get_char,
 * skip_comments, get_gmtoff...), env.c, and cron.c whole -- its main() loop, find_jobs,
 * set_time and cron_sleep -- compiled with time()/sleep() redirected to this file's fake
 * clock, so the real main loop runs a year in seconds. What this file provides instead of
 * the daemon's other files, and why:
 *   - load_database: the entries read from stdin (the real one reads the spool);
 *   - job_add: records (entry, fake time) (the real one queues a fork);
 *   - job_runqueue: returns 0 (no job was started, so the catch-up loop never sleeps its
 *     10 s: the engine models a prompt daemon, see deployer/remote/cronengine.py);
 *   - acquire_daemonlock, set_cron_uid, set_cron_cwd, log_it, check_orphans, access: no-ops
 *     (pid file, setuid, chdir, syslog, spool, the @reboot marker file).
 *
 * Usage:
 *   harness parse          < lines of schedules   -> one line per schedule: ERR <reason>
 *                                                      or OK <flags> <min> <hour> <dom> <month> <dow>
 *   harness run TZ START END QFILE DUMPS < schedules
 *       runs cron's main loop from epoch second START to END in zone TZ; for each query
 *       instant q of QFILE (one epoch second a line) prints "Q e k prev next" (the last
 *       fire <= q and the first fire > q of entry e, -1 if none in the run); for each
 *       window "a b" of DUMPS prints every fire "F e t" with a <= t < b.
 */
#include "cron.h"
#include <setjmp.h>

static time_t fake_now;
static time_t fake_end;
static jmp_buf stop;
int fake_access(const char *p, int m) { (void)p; (void)m; return 0; }
time_t fake_time(time_t *t) {
	if (fake_now > fake_end) longjmp(stop, 1);
	if (t) *t = fake_now;
	return fake_now;
}
static void pass_queries(time_t until);
unsigned int fake_sleep(unsigned int s) { pass_queries(fake_now + s); fake_now += s; return 0; }

void acquire_daemonlock(int closeflag) { (void)closeflag; }
void set_cron_uid(void) {}
void set_cron_cwd(void) {}
void log_it(char *u, int p, char *e, char *d) { (void)u; (void)p; (void)e; (void)d; }
void check_orphans(cron_db *db) { (void)db; }

static user the_user;
static entry **entries;
static int n_entries;
void load_database(cron_db *db) {
	db->head = db->tail = &the_user;
}

/* fires: per entry, queries answered as time goes */
static time_t *queries; static int n_queries;
static time_t *last_fire; static int *next_pending;
static long *q_prev, *q_next;
static time_t (*dumps)[2]; static int n_dumps;

static int index_of(entry *e) {
	for (int i = 0; i < n_entries; i++) if (entries[i] == e) return i;
	return -1;
}
void job_add(entry *e, user *u) {
	(void)u;
	int i = index_of(e);
	time_t t = fake_now;
	for (int d = 0; d < n_dumps; d++)
		if (dumps[d][0] <= t && t < dumps[d][1]) { printf("F %d %ld\n", i, (long)t); break; }
	if (last_fire[i] == t) return;
	while (next_pending[i] < n_queries && queries[next_pending[i]] < t) {
		q_next[(long)i * n_queries + next_pending[i]] = t;
		next_pending[i]++;
	}
	last_fire[i] = t;
}
int job_runqueue(void) { return 0; }

int cron_main(int, char **);
static int qpos;  /* queries whose prev is recorded */
/* time is about to reach ``until``: no fire can happen before it any more */
static void pass_queries(time_t until) {
	while (qpos < n_queries && queries[qpos] < until) {
		for (int i = 0; i < n_entries; i++) q_prev[(long)i * n_queries + qpos] = last_fire[i];
		qpos++;
	}
}

static struct passwd pw;
static char *envp0[] = { NULL };

static entry *parse_line(const char *line, char *why, size_t whylen) {
	static char reason[200];
	reason[0] = 0;
	void err(char *msg) { snprintf(reason, sizeof reason, "%s", msg); }
	char buf[4096];
	snprintf(buf, sizeof buf, "%s command\n", line);
	FILE *f = fmemopen(buf, strlen(buf), "r");
	entry *e = load_entry(f, err, &pw, envp0);
	fclose(f);
	snprintf(why, whylen, "%s", reason[0] ? reason : "no entry");
	return e;
}

static void bits(bitstr_t *b, int n) {
	putchar(' ');
	int any = 0;
	for (int i = 0; i < n; i++) if (bit_test(b, i)) { printf(any ? ",%d" : "%d", i); any = 1; }
	if (!any) putchar('-');
}

int main(int argc, char **argv) {
	static char line[4096];
	pw.pw_name = "oracle"; pw.pw_dir = "/nonexistent"; pw.pw_uid = 4242; pw.pw_gid = 4242;
	if (argc == 2 && !strcmp(argv[1], "parse")) {
		while (fgets(line, sizeof line, stdin)) {
			line[strcspn(line, "\n")] = 0;
			char why[256];
			entry *e = parse_line(line, why, sizeof why);
			if (!e) { printf("ERR %s\n", why); continue; }
			printf("OK %d", e->flags);
			bits(e->minute, MINUTE_COUNT); bits(e->hour, HOUR_COUNT); bits(e->dom, DOM_COUNT);
			bits(e->month, MONTH_COUNT); bits(e->dow, DOW_COUNT);
			putchar('\n');
		}
		return 0;
	}
	if (argc != 7 || strcmp(argv[1], "run")) { fprintf(stderr, "usage: see harness.c\n"); return 2; }
	setenv("TZ", argv[2], 1); tzset();
	fake_now = atol(argv[3]); fake_end = atol(argv[4]);
	FILE *q = fopen(argv[5], "r"); long v;
	queries = malloc(sizeof(time_t) * 100000);
	while (fscanf(q, "%ld", &v) == 1) queries[n_queries++] = v;
	fclose(q);
	FILE *d = fopen(argv[6], "r"); long a, b;
	dumps = malloc(sizeof(*dumps) * 1000);
	while (fscanf(d, "%ld %ld", &a, &b) == 2) { dumps[n_dumps][0] = a; dumps[n_dumps][1] = b; n_dumps++; }
	fclose(d);
	entries = malloc(sizeof(entry *) * 100000);
	entry **tail = &the_user.crontab;
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		char why[256];
		entry *e = parse_line(line, why, sizeof why);
		if (!e) { fprintf(stderr, "refused: %s: %s\n", line, why); return 3; }
		entries[n_entries++] = e; *tail = e; tail = &e->next;
	}
	last_fire = calloc(n_entries, sizeof(time_t));
	for (int i = 0; i < n_entries; i++) last_fire[i] = -1;
	next_pending = calloc(n_entries, sizeof(int));
	q_prev = malloc(sizeof(long) * n_entries * (n_queries ? n_queries : 1));
	q_next = malloc(sizeof(long) * n_entries * (n_queries ? n_queries : 1));
	for (long i = 0; i < (long)n_entries * n_queries; i++) q_prev[i] = q_next[i] = -1;
	the_user.name = "oracle";
	/* prev of a query = last fire at or before it: recorded whenever time passes it */
	if (!setjmp(stop)) {
		char *args[] = { "cron", "-f", NULL };
		cron_main(2, args);
	}
	for (int i = 0; i < n_entries; i++)
		for (int k = 0; k < qpos; k++)
			printf("Q %d %d %ld %ld\n", i, k, q_prev[(long)i * n_queries + k], q_next[(long)i * n_queries + k]);
	return 0;
}
