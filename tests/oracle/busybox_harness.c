/* busybox crond's own ParseField and FixDayDow (miscutils/crond.c, cut out of the source
 * package by tests/oracle/busybox_crond.py into crond_pieces.c), driven line by line.
 * Stubs: bb_error_msg records that crond would log "parse error" (crond then keeps the
 * line with what was set before the error; deployer refuses such a schedule);
 * G.log_level is high so ParseField prints nothing.
 *
 * Usage: busybox-harness < schedules  ->  ERR  or  OK <min> <hour> <day> <month> <dow>
 * (the arrays after FixDayDow, as indices set; '-' for none).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ALIGN1
#define ARRAY_SIZE(x) (sizeof(x) / sizeof((x)[0]))
static int parse_error;
#define bb_error_msg(...) (parse_error = 1)
static struct { int log_level; } G = { 8 };
#define logmode 0
#define LOGMODE_SYSLOG 1
#define bb_putchar_stderr(c) ((void)0)

typedef struct CronLine {
	char cl_Dow[7];
	char cl_Mons[12];
	char cl_Hrs[24];
	char cl_Days[32];
	char cl_Mins[60];
} CronLine;

#include "crond_pieces.c"

static void show(const char *ary, int n) {
	int any = 0;
	putchar(' ');
	for (int i = 0; i < n; i++) if (ary[i]) { printf(any ? ",%d" : "%d", i); any = 1; }
	if (!any) putchar('-');
}

int main(void) {
	static char line[8192];
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		char *tokens[5]; int n = 0;
		for (char *t = strtok(line, " \t"); t && n < 5; t = strtok(NULL, " \t")) tokens[n++] = t;
		if (n < 5) { puts("ERR"); continue; }
		CronLine cl; memset(&cl, 0, sizeof cl);
		parse_error = 0;
		ParseField("oracle", cl.cl_Mins, 60, 0, NULL, tokens[0]);
		ParseField("oracle", cl.cl_Hrs, 24, 0, NULL, tokens[1]);
		ParseField("oracle", cl.cl_Days, 32, 0, NULL, tokens[2]);
		ParseField("oracle", cl.cl_Mons, 12, -1, MonAry, tokens[3]);
		ParseField("oracle", cl.cl_Dow, 7, 0, DowAry, tokens[4]);
		FixDayDow(&cl);
		if (parse_error) { puts("ERR"); continue; }
		printf("OK");
		show(cl.cl_Mins, 60); show(cl.cl_Hrs, 24); show(cl.cl_Days, 32); show(cl.cl_Mons, 12); show(cl.cl_Dow, 7);
		putchar('\n');
	}
	return 0;
}
