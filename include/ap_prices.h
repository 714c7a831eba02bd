/*
 * ap_prices: PRICES_CONFIG, the list price of each model, and exact costs.
 *
 *   {"claude-sonnet-4-5": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
 *    "gpt-4o*": {...}, "_note": "members starting with _ are comments"}
 *
 * Prices are USD per million tokens with at most three decimals, held as
 * integer nano-dollars per token (USD/MTok x 1000), so every cost is an exact
 * integer of nano-dollars: costs add up the same whatever way requests are
 * grouped, and the usage views, the spend budgets and their sums agree to the
 * last digit. A name ending in '*' prices every model it prefixes (the
 * longest such prefix wins; an exact name wins over any prefix). Pure: no I/O
 * but ap_prices_load's read of the file.
 */
#ifndef AP_PRICES_H
#define AP_PRICES_H

#include <stddef.h>
#include <stdint.h>

struct ap_usage;

/* Nano-dollars per token. */
struct ap_price {
    int64_t input;
    int64_t output;
    int64_t cache_read;     /* defaults to input */
    int64_t cache_write;    /* defaults to input */
};

struct ap_prices;

/* Parses and validates; NULL with a message in err (e.g. "gpt-4o: output: must be a number >= 0"). */
struct ap_prices *ap_prices_parse(const char *json, size_t len, char *err, size_t errlen);
struct ap_prices *ap_prices_load(const char *path, char *err, size_t errlen);
void ap_prices_free(struct ap_prices *p); /* NULL allowed */
size_t ap_prices_count(const struct ap_prices *p);

/* The price of `model` (exact name, else the longest matching prefix*), or NULL. p may be NULL. */
const struct ap_price *ap_prices_find(const struct ap_prices *p, const char *model);

/* Cost of `u` in nano-dollars (0 when pr is NULL). */
int64_t ap_price_cost(const struct ap_price *pr, const struct ap_usage *u);

/* Nano-dollars as a decimal number of USD, exact and without trailing zeros: "12.5", "0.000000075", "0". */
void ap_usd_format(int64_t nano, char *out, size_t n);

/* USD (a JSON number) to nano-dollars, rounded; -1 when negative, not finite or above 1e9 USD. */
int ap_usd_to_nano(double usd, int64_t *nano);

#endif
