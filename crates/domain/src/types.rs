//! Small closed vocabularies shared by commands and events.

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The snake_case wire name.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// How bad a complaint is.
    Severity { Minor => "minor", Major => "major", Critical => "critical" }
);
wire_enum!(
    /// Value-added credit: work beyond the contract.
    ValueAddKind {
        IndustryInsight => "industry_insight",
        PartnerIntroduction => "partner_introduction",
        CustomSolution => "custom_solution",
    }
);
wire_enum!(
    /// Emotional credit: care beyond business.
    CareTouchKind { Birthday => "birthday", Holiday => "holiday", CommunityEvent => "community_event", Other => "other" }
);
wire_enum!(
    /// Which survey a score belongs to.
    SurveyKind { Csat => "csat", Nps => "nps" }
);
wire_enum!(
    /// The seven roles of a customer's decision chain.
    ContactRole {
        DecisionMaker => "decision_maker",
        Influencer => "influencer",
        User => "user",
        Buyer => "buyer",
        Finance => "finance",
        TechnicalEvaluator => "technical_evaluator",
        Gatekeeper => "gatekeeper",
    }
);
wire_enum!(
    /// Upsell or cross-sell.
    ExpansionKind { Upsell => "upsell", CrossSell => "cross_sell" }
);
wire_enum!(
    /// What customer success did about a customer.
    InterventionAction {
        Call => "call",
        Visit => "visit",
        Offer => "offer",
        CarePlan => "care_plan",
        ExecutiveEscalation => "executive_escalation",
    }
);
