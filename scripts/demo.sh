#!/usr/bin/env bash
# The README walkthrough as a script: run `make run` in another terminal first.
#   scripts/demo.sh   (ORDER_URL / DELIVERY_URL / INVENTORY_URL / PAYMENT_URL override the local defaults)
set -euo pipefail

ORDER_URL="${ORDER_URL:-http://127.0.0.1:8001}"
DELIVERY_URL="${DELIVERY_URL:-http://127.0.0.1:8002}"
INVENTORY_URL="${INVENTORY_URL:-http://127.0.0.1:8003}"
AUTH_URL="${AUTH_URL:-http://127.0.0.1:8005}"
PAYMENT_URL="${PAYMENT_URL:-http://127.0.0.1:8006}"
# A Stripe test PaymentMethod id, as Stripe.js makes one in the browser: no card data here.
TEST_CARD="${DEMO_PAYMENT_METHOD:-pm_card_visa}"
HERE="$(cd "$(dirname "$0")" && pwd)"
# Demo client secrets and passwords, written by `make run` (mode 0600).
export DEMO_CREDENTIALS="${DEMO_CREDENTIALS:-$HERE/../.data/demo-credentials.json}"
export AUTH_URL
DEADLINE_S="${DEMO_DEADLINE_S:-90}"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'d': d}))" "$1"; }
if [ -t 1 ]; then BOLD=$'\033[1m'; PLAIN=$'\033[0m'; else BOLD=""; PLAIN=""; fi
step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }

curl -fsS "$ORDER_URL/health/ready" >/dev/null || { echo "order service not ready at $ORDER_URL — is 'make run' running?" >&2; exit 1; }
curl -fsS "$AUTH_URL/health/ready" >/dev/null || { echo "auth service not ready at $AUTH_URL — is 'make run' running?" >&2; exit 1; }
curl -fsS "$INVENTORY_URL/health/ready" >/dev/null || { echo "inventory service not ready at $INVENTORY_URL" >&2; exit 1; }
curl -fsS "$PAYMENT_URL/health/ready" >/dev/null || { echo "payment service not ready at $PAYMENT_URL" >&2; exit 1; }

step "1. Log in as the demo customer through the storefront (OAuth2 password grant, auth service)"
TOKEN="$("$HERE/token" --as customer)"
echo "TOKEN=${TOKEN:0:24}… (RS256, 15 minutes; the services check it against the auth service's JWKS)"
available() { curl -fsS "$INVENTORY_URL/v1/products/$1" -H "Authorization: Bearer $TOKEN" | json 'd["available"]'; }

step "1b. The catalog: prices and stock come from the inventory service"
curl -fsS "$INVENTORY_URL/v1/products?limit=10" -H "Authorization: Bearer $TOKEN" | python3 -c "
import json, sys
for p in json.load(sys.stdin)['items']:
    print(f\"  {p['sku']:<18} {p['price']:>7} {p['currency']}  available {p['available']:>4}  {p['stock_status']}\")"
MUGS_BEFORE="$(available MUG-STONEWARE)"

# Only what and how many: the price, currency and total are the catalog's.
ORDER_BODY='{
  "items": [{"sku": "COFFEE-1KG", "quantity": 2},
            {"sku": "MUG-STONEWARE", "quantity": 1}],
  "customer_email": "demo@example.com",
  "shipping_address": {"name": "Demo Customer", "line1": "1 Example Street",
                       "city": "Berlin", "postal_code": "10115", "country": "DE"}
}'
KEY="demo-$(date +%s)-$$"

step "2. Place an order (Idempotency-Key: $KEY)"
RESPONSE="$(curl -sS -i -X POST "$ORDER_URL/v1/orders" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  -H "Idempotency-Key: $KEY" -H "X-Request-ID: demo-$KEY" -d "$ORDER_BODY")"
echo "$RESPONSE" | grep -iE '^(HTTP/|location:)'
BODY="$(echo "$RESPONSE" | sed '1,/^\r\{0,1\}$/d')"
ORDER_ID="$(echo "$BODY" | json 'd["id"]')"
echo "order $ORDER_ID: status $(echo "$BODY" | json 'd["status"]'), total $(echo "$BODY" | json 'd["total"]') $(echo "$BODY" | json 'd["currency"]') (catalog prices)"
echo "payment: $(echo "$BODY" | json 'str(d["payment"]["amount_minor"]) + " minor units, intent " + d["payment"]["payment_intent_id"] + ", client secret " + d["payment"]["client_secret"][:12] + "…"')"
echo "MUG-STONEWARE available: $MUGS_BEFORE before, $(available MUG-STONEWARE) after (held for the order)"

step "3. Send the same request again (a client retry): the stored response is replayed"
REPLAY="$(curl -sS -i -X POST "$ORDER_URL/v1/orders" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  -H "Idempotency-Key: $KEY" -d "$ORDER_BODY")"
echo "$REPLAY" | grep -iE '^(HTTP/|idempotent-replayed:)'
REPLAY_ID="$(echo "$REPLAY" | sed '1,/^\r\{0,1\}$/d' | json 'd["id"]')"
[ "$REPLAY_ID" = "$ORDER_ID" ] && echo "same order id: $REPLAY_ID (no second order)" || { echo "replay returned another order!" >&2; exit 1; }

step "3b. Pay: the storefront confirms the PaymentIntent with a payment method id ($TEST_CARD)"
PAID="$(curl -sS -X POST "$PAYMENT_URL/v1/payments/$ORDER_ID/confirm" -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" -d "{\"payment_method\": \"$TEST_CARD\"}")"
[ "$(echo "$PAID" | json 'd.get("status")')" = "AUTHORIZED" ] || { echo "payment not authorized: $PAID" >&2; exit 1; }
echo "$PAID" | json '"  payment " + d["status"] + ": " + str(d["amount_minor"]) + " " + d["currency"] + " held on the card, charged when it ships"'

step "4. Follow the order until DELIVERED (paid -> shipment -> the carrier simulator moves it)"
SEEN=0
START=$(date +%s)
while :; do
  ORDER="$(curl -fsS "$ORDER_URL/v1/orders/$ORDER_ID" -H "Authorization: Bearer $TOKEN")"
  COUNT="$(echo "$ORDER" | json 'len(d["history"])')"
  if [ "$COUNT" -gt "$SEEN" ]; then
    echo "$ORDER" | python3 -c "
import json, sys
d = json.load(sys.stdin)
for h in d['history'][$SEEN:]:
    print(f\"  {h['occurred_at'][11:19]}  {h['event']:<28} -> {h['status']}\")"
    SEEN=$COUNT
  fi
  STATUS="$(echo "$ORDER" | json 'd["status"]')"
  [ "$STATUS" = "DELIVERED" ] && break
  if [ $(( $(date +%s) - START )) -ge "$DEADLINE_S" ]; then echo "not delivered within ${DEADLINE_S}s (status $STATUS)" >&2; exit 1; fi
  sleep 1
done
echo "tracking: $(echo "$ORDER" | json 'd["shipment"]["carrier"] + " " + d["shipment"]["tracking_number"]')"
SHIPMENT_ID="$(echo "$ORDER" | json 'd["shipment"]["shipment_id"]')"
echo "shipment as the delivery service sees it:"
curl -fsS "$DELIVERY_URL/v1/shipments/$SHIPMENT_ID" -H "Authorization: Bearer $TOKEN" \
  | json '"  status " + d["status"] + ", " + str(len(d["events"])) + " events"'

START=$(date +%s)
until [ "$(curl -fsS "$PAYMENT_URL/v1/payments/$ORDER_ID" -H "Authorization: Bearer $TOKEN" | json 'd["status"]')" = "CAPTURED" ]; do
  if [ $(( $(date +%s) - START )) -ge "$DEADLINE_S" ]; then echo "payment not captured within ${DEADLINE_S}s" >&2; exit 1; fi
  sleep 0.5
done
curl -fsS "$PAYMENT_URL/v1/payments/$ORDER_ID" -H "Authorization: Bearer $TOKEN" \
  | json '"payment " + d["status"] + ": " + str(d["amount_captured"]) + " captured when it shipped"'

step "4b. An operator refunds one mug (it came back): money for that line, the unit back in stock"
ADMIN="$("$HERE/token" --as operator)"
MUGS_BEFORE_REFUND="$(available MUG-STONEWARE)"
REFUND="$(curl -sS -X POST "$PAYMENT_URL/v1/payments/$ORDER_ID/refunds" -H "Authorization: Bearer $ADMIN" \
  -H "Content-Type: application/json" -H "Idempotency-Key: refund-$KEY" \
  -d '{"lines": [{"sku": "MUG-STONEWARE", "quantity": 1}]}')"
[ "$(echo "$REFUND" | json 'd.get("status")')" = "SUCCEEDED" ] || { echo "refund failed: $REFUND" >&2; exit 1; }
echo "$REFUND" | json '"  refund " + d["id"] + ": " + str(d["amount_minor"]) + " minor units for " + str(d["lines"])'
START=$(date +%s)
until [ "$(available MUG-STONEWARE)" -gt "$MUGS_BEFORE_REFUND" ]; do
  if [ $(( $(date +%s) - START )) -ge "$DEADLINE_S" ]; then echo "refunded unit not restocked within ${DEADLINE_S}s" >&2; exit 1; fi
  sleep 0.5
done
echo "restocked: MUG-STONEWARE available $MUGS_BEFORE_REFUND -> $(available MUG-STONEWARE)"

step "5. Place a second order and cancel it before paying: its stock comes back, its payment is voided"
BEFORE_SECOND="$(available MUG-STONEWARE)"
SECOND="$(curl -fsS -X POST "$ORDER_URL/v1/orders" -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" -d "$ORDER_BODY" | json 'd["id"]')"
echo "order $SECOND placed (awaiting payment); MUG-STONEWARE available $BEFORE_SECOND -> $(available MUG-STONEWARE)"
CANCELLED="$(curl -sS -X POST "$ORDER_URL/v1/orders/$SECOND/cancel" -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" -d '{"reason": "changed my mind"}')"
# A refusal is a problem document (e.g. 409 once the carrier has picked the order up).
if [ "$(echo "$CANCELLED" | json '"id" in d')" != "True" ]; then
  echo "cancel refused: $(echo "$CANCELLED" | json 'd["title"] + ": " + d.get("detail", "")')" >&2; exit 1
fi
echo "$CANCELLED" | json '"  status " + d["status"] + " (" + str(d["cancel_reason"]) + ")"'
START=$(date +%s)
until [ "$(available MUG-STONEWARE)" = "$BEFORE_SECOND" ]; do
  if [ $(( $(date +%s) - START )) -ge "$DEADLINE_S" ]; then echo "stock not restored within ${DEADLINE_S}s" >&2; exit 1; fi
  sleep 0.5
done
echo "stock restored: MUG-STONEWARE available $(available MUG-STONEWARE) again"
START=$(date +%s)
until [ "$(curl -fsS "$PAYMENT_URL/v1/payments/$SECOND" -H "Authorization: Bearer $TOKEN" | json 'd["status"]')" = "VOIDED" ]; do
  if [ $(( $(date +%s) - START )) -ge "$DEADLINE_S" ]; then echo "authorization not voided within ${DEADLINE_S}s" >&2; exit 1; fi
  sleep 0.5
done
echo "payment VOIDED: the PaymentIntent is cancelled at Stripe, it can no longer be paid"
REPAY="$(curl -sS -o /dev/null -w "%{http_code}" -X POST "$PAYMENT_URL/v1/payments/$SECOND/confirm" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" -d "{\"payment_method\": \"$TEST_CARD\"}")"
echo "paying it now gets HTTP $REPAY (payment-not-payable)"
[ "$REPAY" = "409" ] || { echo "a cancelled order could still be paid!" >&2; exit 1; }

step "5b. More than is in stock: 409 with each short line and what is available; no order"
SHORT="$(curl -sS -i -X POST "$ORDER_URL/v1/orders" -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -d '{"items": [{"sku": "GRINDER-BURR", "quantity": 1000}, {"sku": "COFFEE-1KG", "quantity": 1}],
       "customer_email": "demo@example.com",
       "shipping_address": {"name": "Demo Customer", "line1": "1 Example Street",
                            "city": "Berlin", "postal_code": "10115", "country": "DE"}}')"
echo "$SHORT" | grep -iE '^HTTP/'
echo "$SHORT" | sed '1,/^\r\{0,1\}$/d' | json '"  " + d["type"] + ": " + str(d["lines"])'

step "6. Bad input gets a problem+json with field details, and writes nothing"
BAD="$(curl -sS -i -X POST "$ORDER_URL/v1/orders" -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -d '{"items": [{"sku": "COFFEE-1KG", "quantity": 0, "unit_price": "1.00"}]}')"
echo "$BAD" | grep -iE '^(HTTP/|content-type:)'
echo "$BAD" | sed '1,/^\r\{0,1\}$/d' | python3 -m json.tool

step "7. Sessions: a refresh token is rotated on use; logging out ends the session"
cred() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['clients'][sys.argv[2]])" "$DEMO_CREDENTIALS" "$1"; }
STOREFRONT_SECRET="$(cred storefront)"
SESSION="$("$HERE/token" --as customer --json)"
REFRESH="$(echo "$SESSION" | json 'd["refresh_token"]')"
ROTATED="$(curl -fsS -u "storefront:$STOREFRONT_SECRET" -d grant_type=refresh_token \
  --data-urlencode "refresh_token=$REFRESH" "$AUTH_URL/oauth/token")"
echo "refreshed: new access token, new refresh token ($(echo "$ROTATED" | json 'd["refresh_token"] != "'"$REFRESH"'"'))"
curl -fsS -o /dev/null -w "logout: HTTP %{http_code}\n" -X POST "$AUTH_URL/oauth/logout" \
  -H "Authorization: Bearer $(echo "$ROTATED" | json 'd["access_token"]')"
AFTER="$(curl -sS -o /dev/null -w "%{http_code}" -u "storefront:$STOREFRONT_SECRET" -d grant_type=refresh_token \
  --data-urlencode "refresh_token=$(echo "$ROTATED" | json 'd["refresh_token"]')" "$AUTH_URL/oauth/token")"
echo "the logged-out session's refresh token now gets HTTP $AFTER"
[ "$AFTER" = "400" ] || { echo "a logged-out refresh token still worked!" >&2; exit 1; }
echo
echo "done."
