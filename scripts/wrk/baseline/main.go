// Command baseline is the floor orderd's HTTP figures are compared with in
// scripts/wrk.sh: a bare chi router whose POST /v1/orders decodes and
// checks the same CreateOrder JSON as orderd and answers 201 with the same
// headers and body shape, and whose GET /v1/orders/{id} answers an order of
// the read model's shape, with no store, no events and no projection
// behind either. What orderd serves beyond this is what its store,
// aggregate, projector and middleware cost.
//
//	go run ./scripts/wrk/baseline -addr 127.0.0.1:18090
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
)

type item struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
}

type createOrder struct {
	ID         *string `json:"id"`
	CustomerID string  `json:"customer_id"`
	Items      []item  `json:"items"`
}

type order struct {
	ID              uuid.UUID `json:"id"`
	CustomerID      uuid.UUID `json:"customer_id"`
	Status          string    `json:"status"`
	Items           []item    `json:"items"`
	TrackingNumber  *string   `json:"tracking_number"`
	Carrier         *string   `json:"carrier"`
	CancelledReason *string   `json:"cancelled_reason"`
	Version         int64     `json:"version"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen address")
	flag.Parse()

	r := chi.NewRouter()
	r.Post("/v1/orders", func(w http.ResponseWriter, r *http.Request) {
		var req createOrder
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if _, err := uuid.Parse(req.CustomerID); err != nil || len(req.Items) == 0 {
			http.Error(w, "bad order", http.StatusUnprocessableEntity)
			return
		}
		for _, it := range req.Items {
			if _, err := uuid.Parse(it.ProductID); err != nil || it.Quantity < 1 {
				http.Error(w, "bad item", http.StatusUnprocessableEntity)
				return
			}
		}
		id := uuid.Must(uuid.NewV7())
		w.Header().Set("Location", "/v1/orders/"+id.String())
		w.Header().Set("ETag", `"1"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(struct {
			ID      uuid.UUID `json:"id"`
			Version int64     `json:"version"`
		}{id, 1})
	})
	r.Get("/v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := uuid.Parse(chi.URLParam(r, "id"))
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		now := time.Now().UTC()
		w.Header().Set("ETag", `"1"`)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(order{
			ID: id, CustomerID: id, Status: "created",
			Items:   []item{{ProductID: id.String(), Quantity: 1}},
			Version: 1, CreatedAt: now, UpdatedAt: now,
		})
	})
	srv := &http.Server{Addr: *addr, Handler: r, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("baseline listening on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}
