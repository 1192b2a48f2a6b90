package provider

import (
	"context"
	"fmt"
	"net/http"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// tenantResource is `omnisql_tenant`: a customer of the platform, with its home region and limits.
type tenantResource struct{ client *client }

type tenantModel struct {
	ID                      types.String  `tfsdk:"id"`
	Name                    types.String  `tfsdk:"name"`
	Region                  types.String  `tfsdk:"region"`
	KeyID                   types.String  `tfsdk:"key_id"`
	Weight                  types.Float64 `tfsdk:"weight"`
	StatementTimeoutSeconds types.Int64   `tfsdk:"statement_timeout_seconds"`
	MaxConcurrentQueries    types.Int64   `tfsdk:"max_concurrent_queries"`
}

// tenantJSON is the admin API's tenant.
type tenantJSON struct {
	ID                      string  `json:"id"`
	Name                    string  `json:"name"`
	Region                  string  `json:"region"`
	KeyID                   string  `json:"key_id"`
	Weight                  float64 `json:"weight"`
	StatementTimeoutSeconds *int64  `json:"statement_timeout_seconds"`
	MaxConcurrentQueries    *int64  `json:"max_concurrent_queries"`
}

func newTenantResource() resource.Resource { return &tenantResource{} }

func (r *tenantResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_tenant"
}

func (r *tenantResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "A tenant: its name, home region (whose data planes serve it), KMS key and limits.",
		Attributes: map[string]schema.Attribute{
			"id":     schema.StringAttribute{Required: true, PlanModifiers: replace, Description: "Lowercase identifier, unique on the platform."},
			"name":   schema.StringAttribute{Required: true},
			"region": schema.StringAttribute{Required: true, PlanModifiers: replace, Description: "Home region."},
			"key_id": schema.StringAttribute{
				Optional: true, Computed: true, Description: "The KMS key that seals its credentials (default: the control plane's).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace(), stringplanmodifier.UseStateForUnknown()},
			},
			"weight":                    schema.Float64Attribute{Optional: true, Computed: true, Description: "Share of contended limits (default 1)."},
			"statement_timeout_seconds": schema.Int64Attribute{Optional: true, Description: "Longest statement (default: the data plane's)."},
			"max_concurrent_queries":    schema.Int64Attribute{Optional: true, Description: "Statements at once per data plane (default: the data plane's)."},
		},
	}
}

func (r *tenantResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*client); ok {
		r.client = c
	}
}

func (m *tenantModel) fromAPI(t tenantJSON) {
	m.ID = types.StringValue(t.ID)
	m.Name = types.StringValue(t.Name)
	m.Region = types.StringValue(t.Region)
	m.KeyID = types.StringValue(t.KeyID)
	m.Weight = types.Float64Value(t.Weight)
	m.StatementTimeoutSeconds = types.Int64PointerValue(t.StatementTimeoutSeconds)
	m.MaxConcurrentQueries = types.Int64PointerValue(t.MaxConcurrentQueries)
}

// changeable is what a tenant's creation and update both send: name, weight and limits (a limit
// left out is sent as null: the data plane's default).
func (m *tenantModel) changeable() map[string]any {
	body := map[string]any{
		"name":                      m.Name.ValueString(),
		"statement_timeout_seconds": m.StatementTimeoutSeconds.ValueInt64Pointer(),
		"max_concurrent_queries":    m.MaxConcurrentQueries.ValueInt64Pointer(),
	}
	if !m.Weight.IsNull() && !m.Weight.IsUnknown() {
		body["weight"] = m.Weight.ValueFloat64()
	}
	return body
}

func (r *tenantResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan tenantModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	body := plan.changeable()
	body["id"], body["region"] = plan.ID.ValueString(), plan.Region.ValueString()
	if !plan.KeyID.IsNull() && !plan.KeyID.IsUnknown() {
		body["key_id"] = plan.KeyID.ValueString()
	}
	var created struct {
		Tenant tenantJSON `json:"tenant"`
	}
	if err := r.client.call(ctx, http.MethodPost, "/v1/tenants", body, &created); err != nil {
		resp.Diagnostics.AddError("Cannot create the tenant", err.Error())
		return
	}
	plan.fromAPI(created.Tenant)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *tenantResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state tenantModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var t tenantJSON
	err := r.client.call(ctx, http.MethodGet, "/v1/tenants/"+state.ID.ValueString(), nil, &t)
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the tenant", err.Error())
		return
	}
	state.fromAPI(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *tenantResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan tenantModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var t tenantJSON
	if err := r.client.call(ctx, http.MethodPatch, "/v1/tenants/"+plan.ID.ValueString(), plan.changeable(), &t); err != nil {
		resp.Diagnostics.AddError("Cannot update the tenant", err.Error())
		return
	}
	plan.fromAPI(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *tenantResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state tenantModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	deleteAt(ctx, r.client, "/v1/tenants/"+state.ID.ValueString(), "tenant", &resp.Diagnostics)
}

func (r *tenantResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if req.ID == "" {
		resp.Diagnostics.AddError("Missing tenant id", fmt.Sprintf("import with the tenant's id, got %q", req.ID))
		return
	}
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
