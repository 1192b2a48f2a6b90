package provider

import (
	"context"
	"net/http"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// apiKeyResource is `omnisql_api_key`. The key is shown by the control plane once, when created, and
// kept (sensitive) in the state; destroying the resource revokes it.
type apiKeyResource struct{ client *client }

type apiKeyModel struct {
	Tenant           types.String `tfsdk:"tenant"`
	Principal        types.String `tfsdk:"principal"`
	ExpiresInSeconds types.Int64  `tfsdk:"expires_in_seconds"`
	ID               types.String `tfsdk:"id"`
	Prefix           types.String `tfsdk:"prefix"`
	Key              types.String `tfsdk:"key"`
}

type apiKeyJSON struct {
	ID          string `json:"id"`
	PrincipalID string `json:"principal_id"`
	Prefix      string `json:"prefix"`
	RevokedAt   *int64 `json:"revoked_at"`
}

func newAPIKeyResource() resource.Resource { return &apiKeyResource{} }

func (r *apiKeyResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_api_key"
}

func (r *apiKeyResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	resp.Schema = schema.Schema{
		Description: "An API key of a principal. The key is known only at creation; it is kept in the state (sensitive).",
		Attributes: map[string]schema.Attribute{
			"tenant":    schema.StringAttribute{Required: true, PlanModifiers: replace},
			"principal": schema.StringAttribute{Required: true, PlanModifiers: replace},
			"expires_in_seconds": schema.Int64Attribute{Optional: true,
				PlanModifiers: []planmodifier.Int64{int64planmodifier.RequiresReplace()}},
			"id":     schema.StringAttribute{Computed: true, PlanModifiers: keep},
			"prefix": schema.StringAttribute{Computed: true, PlanModifiers: keep, Description: "The key's first characters."},
			"key":    schema.StringAttribute{Computed: true, Sensitive: true, PlanModifiers: keep},
		},
	}
}

func (r *apiKeyResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*client); ok {
		r.client = c
	}
}

func (r *apiKeyResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan apiKeyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	body := map[string]any{"principal": plan.Principal.ValueString(), "expires_in_seconds": plan.ExpiresInSeconds.ValueInt64Pointer()}
	var created struct {
		APIKey apiKeyJSON `json:"api_key"`
		Key    *string    `json:"key"`
	}
	if err := r.client.call(ctx, http.MethodPost, "/v1/tenants/"+plan.Tenant.ValueString()+"/api-keys", body, &created); err != nil {
		resp.Diagnostics.AddError("Cannot create the API key", err.Error())
		return
	}
	plan.ID = types.StringValue(created.APIKey.ID)
	plan.Prefix = types.StringValue(created.APIKey.Prefix)
	plan.Key = types.StringPointerValue(created.Key)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// Read drops a key that was revoked or removed outside Terraform, so the next apply creates a new one.
func (r *apiKeyResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state apiKeyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	live := false
	err := each(ctx, r.client, "/v1/tenants/"+state.Tenant.ValueString()+"/api-keys", func(k apiKeyJSON) bool {
		if k.ID == state.ID.ValueString() {
			live = k.RevokedAt == nil
			return true
		}
		return false
	})
	if isNotFound(err) || (err == nil && !live) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the API key", err.Error())
	}
}

func (r *apiKeyResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	resp.Diagnostics.AddError("API keys cannot change in place", "every attribute replaces the key")
}

func (r *apiKeyResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state apiKeyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	err := r.client.call(ctx, http.MethodDelete, "/v1/tenants/"+state.Tenant.ValueString()+"/api-keys/"+state.ID.ValueString(), nil, nil)
	if err != nil && !isNotFound(err) {
		resp.Diagnostics.AddError("Cannot revoke the API key", err.Error())
	}
}
